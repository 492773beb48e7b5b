//! Software VT-x: an x86-64 interpreter with exact retired-branch counting and a virtual PMU
