//! A fill-in-the-middle request's prompt in the worker: the model's FIM
//! tokens and the text around the cursor, in `engine::infill`'s layout.

use tonic::Status;

use super::service::engine_status;
use crate::engine::EngineHandle;
use crate::engine::infill::{self, Fim, Infill};
use crate::proto::pb;

/// A fill-in-the-middle prompt's tokens (see `engine::infill`); an
/// error for a model without FIM tokens.
pub fn tokens(
    engine: &EngineHandle,
    fill: &pb::Infill,
    prompt: &str,
) -> Result<Vec<llama_cpp_2::token::LlamaToken>, Status> {
    let vocab = engine.model().vocab();
    let fim = Fim::new(
        vocab.fim_pre().0,
        vocab.fim_suf().0,
        vocab.fim_mid().0,
        vocab.fim_rep().0,
        vocab.fim_sep().0,
    )
    .map_err(engine_status)?;
    // The model's BOS, if its tokenizer adds one.
    let bos = engine.tokenize("", true, false).first().map(|t| t.0);
    let extra: Vec<(String, String)> = fill
        .extra
        .iter()
        .map(|c| (c.filename.clone(), c.text.clone()))
        .collect();
    let layout = Infill {
        prefix: &fill.prefix,
        suffix: &fill.suffix,
        extra: &extra,
        prompt,
    };
    let ids = infill::tokens(&fim, bos, &layout, |text| {
        engine
            .tokenize(text, false, false)
            .into_iter()
            .map(|t| t.0)
            .collect()
    });
    Ok(ids
        .into_iter()
        .map(llama_cpp_2::token::LlamaToken)
        .collect())
}
