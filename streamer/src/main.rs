//! `streammachine`: the streaming audio server. All wiring lives in [`streamer::cli`].
fn main() -> std::process::ExitCode {
    streamer::cli::main()
}
