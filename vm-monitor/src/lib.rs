//! Machine model, devices, exit dispatch and record/replay interposition: the trusted record path
