fn main() {
    afl::fuzz!(|data: &[u8]| pf_fuzz::ndjson_stages(data));
}
