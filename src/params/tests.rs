//! The engine settings: clamps, patches, and their spellings.

use super::*;

fn patch(toml: &str) -> ModelParamsPatch {
    use figment::providers::{Format, Toml};
    figment::Figment::from(Toml::string(toml))
        .extract()
        .unwrap()
}

#[test]
fn normalized_clamps_only_what_the_engine_cannot_run_with() {
    let zero = ModelParams {
        ctx_size: 0,
        parallel: 0,
        batch_size: 0,
        threads: 0,
        main_gpu: 3,
        gpu_layers: GpuLayers::Count(0),
        ..ModelParams::default()
    };
    let n = zero.normalized();
    assert_eq!((n.ctx_size, n.parallel, n.batch_size), (MIN_CTX_SIZE, 1, 1));
    assert_eq!(
        (n.threads, n.main_gpu, n.gpu_layers),
        (0, 3, GpuLayers::Count(0))
    );
    let fine = ModelParams::default();
    assert_eq!(fine.normalized(), fine);
    assert_eq!(n.normalized(), n);
}

#[test]
fn a_patch_sets_only_its_own_fields_over_what_lies_under() {
    let table = ModelParamsPatch {
        ctx_size: Some(8192),
        ..ModelParamsPatch::default()
    };
    let defaults = ModelParamsPatch {
        ctx_size: Some(2048),
        parallel: Some(2),
        ..ModelParamsPatch::default()
    };
    let base = ModelParams {
        batch_size: 128,
        ..ModelParams::default()
    };
    let p = table.or(defaults).over(base);
    assert_eq!((p.ctx_size, p.parallel, p.batch_size), (8192, 2, 128));
    assert_eq!(ModelParamsPatch::default().over(base), base);
}

#[test]
fn the_config_spellings_are_the_documented_ones() {
    let p = patch("gpu_layers = \"all\"\nflash_attn = \"on\"\ncache_type_k = \"q8_0\"\n");
    assert_eq!(p.gpu_layers, Some(GpuLayers::All));
    assert_eq!(p.flash_attn, Some(FlashAttn::On));
    assert_eq!(p.cache_type_k, Some(CacheType::Q8_0));
    let n = patch("gpu_layers = 12\n");
    assert_eq!(n.gpu_layers, Some(GpuLayers::Count(12)));
}

#[test]
fn gpu_layers_encode_for_llama_cpp_and_the_wire_in_one_place() {
    for layers in [
        GpuLayers::Auto,
        GpuLayers::All,
        GpuLayers::Count(0),
        GpuLayers::Count(7),
    ] {
        assert_eq!(GpuLayers::from_proto(layers.to_proto()), layers);
        assert_eq!(layers.to_string().parse::<GpuLayers>(), Ok(layers));
    }
    assert_eq!(GpuLayers::Auto.llama_value(), None);
    assert_eq!(GpuLayers::Count(5).llama_value(), Some(5));
}

#[test]
fn to_argv_skips_absent_fields() {
    let sampling = SamplingSettings {
        top_k: Some(-1),
        ..SamplingSettings::default()
    };
    assert_eq!(
        to_argv(&sampling),
        [OsString::from("--top-k"), OsString::from("-1")]
    );
}
