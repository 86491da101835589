//! GGUF dequantisation of every block type the reader claims, against the `gguf` Python
//! package's numpy reference (fixture made by `scripts/make_gguf_fixtures.py`).

mod common;

use airlift_worker::gguf::dequantize_blocks;

#[test]
fn every_block_type_matches_the_numpy_reference() {
    let path = common::fixtures().join("gguf").join("blocks.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    let want = ["F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K"];
    for name in want {
        let case = &all[name];
        assert!(case.is_object(), "{}: no case for {name}", path.display());
        let t = case["ggml_type"].as_u64().unwrap() as u32;
        let hex = case["bytes_hex"].as_str().unwrap();
        let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let expected: Vec<f32> = case["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let got = dequantize_blocks(t, &bytes, expected.len());
        assert_eq!(got.len(), expected.len(), "{name}: value count");
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            // The reference computes in f32 as ggml does; allow one rounding of the scale products.
            let tol = 1e-6 * e.abs().max(1.0);
            assert!((g - e).abs() <= tol, "{name}: value {i}: airlift {g}, reference {e}");
        }
    }
}
