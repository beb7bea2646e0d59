#![no_std]
// The eBPF programs are in main.rs; this empty lib lets agent/build.rs depend on the crate.
