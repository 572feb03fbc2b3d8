fn main() {
    eprintln!("shardgate-sim: not built yet");
    std::process::exit(2);
}
