//! `streammachine-operator`: the controllers come in the next steps.

fn main() {
    eprintln!("streammachine-operator: no controllers yet");
}
