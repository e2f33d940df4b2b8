// The console's playground: streams a completion (/v1/completions) or a chat
// (/v1/chat/completions) with `stream: true`, showing the text as it comes,
// then the usage and timing. Loaded before app.js, whose helpers it uses
// ($, authHeaders, failure, askKey, showError, refreshDetail).
'use strict';

let generation = null;

function renderModelChoice(ids) {
  const select = $('pg-model');
  const chosen = select.value;
  if (select.options.length === ids.length && [...select.options].every((o, i) => o.value === ids[i])) return;
  select.replaceChildren(...ids.map((id) => el('option', { value: id, textContent: id })));
  if (ids.includes(chosen)) select.value = chosen;
}

// Called by app.js once its helpers exist.
function setupPlayground() {
  $('pg-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    generate();
  });
  $('pg-stop').addEventListener('click', () => { if (generation) generation.abort(); });
}

async function generate() {
  const model = $('pg-model').value;
  const chat = $('pg-mode').value === 'chat';
  const prompt = $('pg-prompt').value;
  const maxTokens = Math.max(1, Math.min(4096, Number($('pg-max').value) || 48));
  const out = $('pg-out');
  out.textContent = '';
  $('pg-stats').textContent = 'waiting for the first token…';
  const body = { model, stream: true, max_tokens: maxTokens, stream_options: { include_usage: true } };
  if (chat) body.messages = [{ role: 'user', content: prompt }]; else body.prompt = prompt;
  const ctl = new AbortController();
  generation = ctl;
  $('pg-send').disabled = true;
  $('pg-stop').disabled = false;
  const started = performance.now();
  let first = null;
  let usage = null;
  try {
    const r = await fetch(chat ? '/v1/chat/completions' : '/v1/completions', {
      method: 'POST',
      headers: authHeaders({ 'Content-Type': 'application/json', Accept: 'text/event-stream' }),
      body: JSON.stringify(body),
      signal: ctl.signal,
    });
    if (r.status === 401) { askKey('The server refused the key: ' + await failure(r)); throw new Unauthorized(''); }
    if (!r.ok) throw new Error(await failure(r));
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    let finished = false;
    while (!finished) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value.replace(/\r\n?/g, '\n');
      let end;
      while (!finished && (end = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, end).trim();
        buf = buf.slice(end + 1);
        if (!line.startsWith('data:')) continue;
        const data = line.slice(5).trim();
        if (data === '[DONE]') { finished = true; break; }
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) usage = chunk.usage;
        const choice = (chunk.choices || [])[0];
        const piece = choice ? (chat ? (choice.delta && choice.delta.content) : choice.text) : '';
        if (piece) {
          if (first === null) first = performance.now();
          out.textContent += piece;
        }
      }
    }
    const total = performance.now() - started;
    const parts = [];
    if (usage) parts.push(usage.prompt_tokens + ' prompt tokens', usage.completion_tokens + ' completion tokens');
    if (first !== null) parts.push('first token after ' + (first - started).toFixed(0) + ' ms');
    if (usage && first !== null && usage.completion_tokens > 1) {
      const rate = (usage.completion_tokens - 1) / Math.max(0.001, (performance.now() - first) / 1000);
      parts.push(rate.toFixed(1) + ' tokens/s');
    }
    parts.push('total ' + (total / 1000).toFixed(2) + ' s');
    $('pg-stats').textContent = parts.join(' · ');
    if (detailId === model) refreshDetail();
  } catch (e) {
    if (ctl.signal.aborted) $('pg-stats').textContent = 'stopped';
    else if (!(e instanceof Unauthorized)) { $('pg-stats').textContent = 'failed: ' + e.message; showError('Generation failed: ' + e.message); }
  } finally {
    generation = null;
    $('pg-send').disabled = false;
    $('pg-stop').disabled = true;
  }
}

