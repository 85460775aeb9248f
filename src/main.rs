fn main() {
    println!("webdistill");
}
