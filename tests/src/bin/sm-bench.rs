fn main() {
    eprintln!("sm-bench: not written yet");
    std::process::exit(2)
}
