//! `llama-router generate` and `llama-router chat`: stream tokens to the terminal.

use std::io::{BufRead, Write};

use tokio_stream::StreamExt;

use super::EndpointArg;
use super::client::{Authed, ClientError};
use crate::proto::pb::inference_service_client::InferenceServiceClient;
use crate::proto::pb::{self, FinishReason};

/// Sampling flags shared by `generate` and `chat`.
#[derive(Debug, Clone, clap::Args)]
pub struct SamplingArgs {
    /// Most tokens to generate; 0 = until the model stops.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: u32,
    /// 0 = greedy [default: 0.8].
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Same seed, same request: same tokens [default: random].
    #[arg(long)]
    pub seed: Option<u32>,
    /// Stop before this text (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Print token counts and speed to stderr at the end.
    #[arg(long)]
    pub usage: bool,
}

impl SamplingArgs {
    fn params(&self) -> pb::SamplingParams {
        pb::SamplingParams {
            temperature: self.temperature,
            seed: self.seed,
            ..Default::default()
        }
    }
}

/// Arguments of `generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// Model id.
    pub model: String,
    /// Prompt text.
    pub prompt: String,
    /// Sampling.
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Where the daemon is.
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

/// Arguments of `chat`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChatArgs {
    /// Model id.
    pub model: String,
    /// A system message opening the conversation.
    #[arg(long)]
    pub system: Option<String>,
    /// Sampling.
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Where the daemon is.
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

async fn client(endpoint: &EndpointArg) -> Result<InferenceServiceClient<Authed>, ClientError> {
    Ok(InferenceServiceClient::new(
        endpoint.resolve().channel().await?,
    ))
}

/// Prints a stream's text as it comes; returns the whole text.
async fn print_stream(
    mut stream: tonic::Streaming<pb::GenerateResponse>,
    show_usage: bool,
) -> Result<String, ClientError> {
    let mut out = std::io::stdout();
    let mut text = String::new();
    while let Some(piece) = stream.next().await {
        let piece = piece?;
        out.write_all(piece.text.as_bytes())?;
        out.flush()?;
        text.push_str(&piece.text);
        let finish = piece.finish_reason();
        if finish == FinishReason::Error {
            return Err(ClientError::Rpc(tonic::Status::internal(piece.error)));
        }
        if let (true, Some(u)) = (show_usage, piece.usage) {
            eprintln!(
                "\n[{} prompt + {} generated tokens; first token after {:.0} ms; {:.1} tokens/s; {}]",
                u.prompt_tokens,
                u.completion_tokens,
                u.time_to_first_token_ms,
                u.tokens_per_second,
                finish
                    .as_str_name()
                    .trim_start_matches("FINISH_REASON_")
                    .to_lowercase()
            );
        }
    }
    Ok(text)
}

/// `generate`: one prompt, streamed.
pub async fn generate(args: &GenerateArgs) -> Result<(), ClientError> {
    let mut client = client(&args.endpoint).await?;
    let request = pb::GenerateRequest {
        model: args.model.clone(),
        prompt: args.prompt.clone(),
        max_tokens: args.sampling.max_tokens,
        sampling: Some(args.sampling.params()),
        stop: args.sampling.stop.clone(),
        ..Default::default()
    };
    let stream = client.generate(request).await?.into_inner();
    print_stream(stream, args.sampling.usage).await?;
    println!();
    Ok(())
}

/// `chat`: reads lines from stdin, keeps the conversation, streams each answer.
pub async fn chat(args: &ChatArgs) -> Result<(), ClientError> {
    let mut client = client(&args.endpoint).await?;
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(pb::ChatMessage {
            role: "system".into(),
            content: system.clone(),
            ..Default::default()
        });
    }
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        messages.push(pb::ChatMessage {
            role: "user".into(),
            content: line.to_owned(),
            ..Default::default()
        });
        let request = pb::ChatRequest {
            model: args.model.clone(),
            messages: messages.clone(),
            max_tokens: args.sampling.max_tokens,
            sampling: Some(args.sampling.params()),
            stop: args.sampling.stop.clone(),
            ..Default::default()
        };
        let stream = client.chat(request).await?.into_inner();
        let answer = print_stream(stream, args.sampling.usage).await?;
        println!();
        messages.push(pb::ChatMessage {
            role: "assistant".into(),
            content: answer,
            ..Default::default()
        });
    }
}
