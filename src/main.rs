//! The `tap-fullstory` binary: all the work is in the library; this only
//! turns its outcome into the process exit code.

fn main() {
    std::process::exit(tap_fullstory::cli::main());
}
