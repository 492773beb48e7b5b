//! Opening KVM and creating a VM over caller-owned guest memory.

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Why KVM could not be opened or a VM set up.
#[derive(Debug, thiserror::Error)]
pub enum KvmSetupError {
    /// /dev/kvm does not exist.
    #[error("/dev/kvm does not exist (KVM module not loaded, or not a KVM-capable host)")]
    NoDevice,
    /// /dev/kvm exists but could not be opened.
    #[error("/dev/kvm cannot be opened: {0}")]
    Open(std::io::Error),
    /// The KVM API version is not the stable one (12).
    #[error("KVM API version {0}, expected 12")]
    ApiVersion(i32),
    /// A KVM ioctl failed.
    #[error("{what} failed: {err}")]
    Ioctl {
        /// Which step.
        what: &'static str,
        /// The OS error.
        err: kvm_ioctls::Error,
    },
    /// Guest memory could not be registered.
    #[error("guest memory: {0}")]
    Memory(String),
}

impl KvmSetupError {
    pub(crate) fn ioctl(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Self {
        move |err| KvmSetupError::Ioctl { what, err }
    }
}

/// Open /dev/kvm and check the API version, with a reason when it fails.
pub fn open_kvm() -> Result<Kvm, KvmSetupError> {
    if !std::path::Path::new("/dev/kvm").exists() {
        return Err(KvmSetupError::NoDevice);
    }
    let kvm = Kvm::new()
        .map_err(|e| KvmSetupError::Open(std::io::Error::from_raw_os_error(e.errno())))?;
    let v = kvm.get_api_version();
    if v != 12 {
        return Err(KvmSetupError::ApiVersion(v));
    }
    Ok(kvm)
}

/// Register every region of `mem` as a KVM memory slot (slot i = region i).
pub fn register_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), KvmSetupError> {
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|e| KvmSetupError::Memory(e.to_string()))?;
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mmap of `memory_size` bytes owned by
        // `mem`; callers keep a clone of `mem` (which keeps the mapping alive)
        // for as long as the VM exists.
        unsafe { vm.set_user_memory_region(r) }
            .map_err(KvmSetupError::ioctl("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(())
}

/// The host's supported CPUID, as a starting point for a guest's.
pub fn supported_cpuid(kvm: &Kvm) -> Result<CpuId, KvmSetupError> {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(KvmSetupError::ioctl("KVM_GET_SUPPORTED_CPUID"))
}
