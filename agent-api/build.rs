//! Compiles `spindle/agent/v1/agent.proto` with protox (a protobuf compiler in Rust: no
//! `protoc` to install) and generates the messages, the client and the server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "spindle/agent/v1/agent.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["."])?;
    tonic_prost_build::configure()
        // CHAP secrets must never reach a log: these get a hand-written Debug (src/lib.rs).
        .skip_debug(["spindle.agent.v1.ChapCredentials"])
        .compile_fds(fds)?;
    Ok(())
}
