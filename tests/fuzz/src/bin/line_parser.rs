fn main() {
    afl::fuzz!(|data: &[u8]| pf_fuzz::line_parser(data));
}
