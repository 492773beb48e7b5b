//! Hardware virtualization through Linux KVM behind the Vcpu trait
