// The official OpenAI client library (npm `openai`, maxRetries 0) against the real daemon's
// web port: models, chat completions streamed and not, stateful chat, chained and forked
// Responses, response streams, the error classes, and SIGTERM mid-stream.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const fs = require('node:fs');
const os = require('node:os');
const OpenAI = require('openai');
const { Daemon } = require('./daemon.cjs');

let d;
let client;

test.before(async () => {
  d = await new Daemon(['--keep-turn-checkpoints', '4', '--max-tokens-limit', '100000']).start();
  client = new OpenAI({ baseURL: d.web + '/v1', apiKey: 'unused', maxRetries: 0 });
});

test.after(async () => {
  assert.equal(await d.stop(), 0);
});

const ask = (content, extra = {}) => ({
  model: d.modelName, messages: [{ role: 'user', content }], temperature: 0, max_tokens: 8,
  ...extra,
});

test('models', async () => {
  const models = [];
  for await (const m of client.models.list()) models.push(m.id);
  assert.deepEqual(models, [d.modelName]);
});

test('streamed chat completion equals the whole one, usage included', async () => {
  const stream = await client.chat.completions.create(
    ask('Hello', { stream: true, stream_options: { include_usage: true } }));
  let text = '';
  let usage = null;
  let finish = null;
  let first = true;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    if (!chunk.choices.length) continue;
    if (first) assert.equal(chunk.choices[0].delta.role, 'assistant');
    first = false;
    text += chunk.choices[0].delta.content || '';
    finish = chunk.choices[0].finish_reason || finish;
  }
  const whole = await client.chat.completions.create(ask('Hello'));
  assert.equal(whole.choices[0].message.content, text);
  assert.equal(whole.choices[0].finish_reason, finish);
  assert.deepEqual(whole.usage, usage);
  assert.equal(usage.completion_tokens, 8);
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
});

test('stateful chat via the xlstmd field', async () => {
  const s = await (await fetch(d.web + '/v1/sessions', {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}',
  })).json();
  const r1 = await client.chat.completions.create(ask('First', { xlstmd: { session_id: s.session_id } }));
  const r2 = await client.chat.completions.create(ask('Second', { xlstmd: { session_id: s.session_id } }));
  assert.equal(r1.xlstmd.session_version, 1);
  assert.equal(r2.xlstmd.session_version, 2);
  assert.equal(r1.usage.prompt_tokens_details.cached_tokens, 0);
  assert.equal(r2.usage.prompt_tokens_details.cached_tokens,
    r1.usage.prompt_tokens + r1.usage.completion_tokens);
});

test('responses chained by previous_response_id, then a fork from the first', async () => {
  const opts = { model: d.modelName, max_output_tokens: 4, temperature: 0 };
  const r1 = await client.responses.create({ ...opts, input: 'Hello', instructions: 'Be brief.' });
  const r2 = await client.responses.create({ ...opts, input: 'More', previous_response_id: r1.id });
  const r3 = await client.responses.create({ ...opts, input: 'Again', previous_response_id: r2.id });
  const cached = [r1, r2, r3].map((r) => r.usage.input_tokens_details.cached_tokens);
  assert.equal(cached[0], 0);
  assert.ok(cached[0] < cached[1] && cached[1] < cached[2], `cached tokens grow: ${cached}`);
  // Each request carried only its new input: what was read is the input minus the cache.
  for (const r of [r2, r3]) {
    assert.ok(r.usage.input_tokens - r.usage.input_tokens_details.cached_tokens < 40);
  }
  assert.equal(r3.output_text, r3.output[0].content[0].text);
  const fork = await client.responses.create({ ...opts, input: 'More', previous_response_id: r1.id });
  assert.equal(fork.output_text, r2.output_text, 'the same input after r1 gives the same reply');
  assert.notEqual(fork.id, r2.id);
  const fetched = await client.responses.retrieve(r3.id);
  assert.equal(fetched.output_text, r3.output_text);
});

test('responses.stream events in order', async () => {
  const stream = client.responses.stream({ model: d.modelName, input: 'Hi', max_output_tokens: 4 });
  const types = [];
  let deltas = '';
  for await (const ev of stream) {
    types.push(ev.type);
    if (ev.type === 'response.output_text.delta') deltas += ev.delta;
  }
  // The SDK takes its final response from response.completed only; at the token limit the
  // last event is response.incomplete and the snapshot is what the deltas built.
  const final = await stream.finalResponse();
  assert.deepEqual(types.slice(0, 4), ['response.created', 'response.in_progress',
    'response.output_item.added', 'response.content_part.added']);
  assert.equal(types[types.length - 1], 'response.incomplete');
  assert.ok(types.includes('response.output_text.delta'));
  assert.equal(final.output[0].content[0].text, deltas);
});

test('bad inputs get the SDK error classes', async () => {
  const s = await (await fetch(d.web + '/v1/sessions', {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}',
  })).json();
  const cases = [
    [ask('x', { n: 2 }), OpenAI.BadRequestError, 400, 'n'],
    [ask('x', { temperature: 'hot' }), OpenAI.BadRequestError, 400, 'temperature'],
    [ask('x', { frobnicate: true }), OpenAI.BadRequestError, 400, 'frobnicate'],
    [{ model: d.modelName, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:,' } }] }] },
      OpenAI.BadRequestError, 400, 'messages[0].content[0]'],
    [ask('x', { max_tokens: 100001 }), OpenAI.BadRequestError, 400, null],
    [ask('x', { xlstmd: { session_id: s.session_id, expected_version: 5 } }), OpenAI.ConflictError, 409, null],
    [ask('x', { tools: [{ type: 'function', function: { name: 'f' } }] }), OpenAI.BadRequestError, 400, 'tools'],
    [{ model: d.modelName, messages: [] }, OpenAI.BadRequestError, 400, 'messages'],
    [{ model: d.modelName, messages: [{ role: 'assistant', content: 'x' }] }, OpenAI.BadRequestError, 400, 'messages'],
    [ask('x', { xlstmd: { session_id: 'AAAAAAAAAAAAAAAAAAAAAA' } }), OpenAI.NotFoundError, 404, null],
    [ask('x', { model: 'nope' }), OpenAI.NotFoundError, 404, 'model'],
  ];
  for (const [body, cls, status, param] of cases) {
    await assert.rejects(client.chat.completions.create(body), (e) => {
      assert.ok(e instanceof cls, `${JSON.stringify(body)}: ${e.constructor.name}`);
      assert.equal(e.status, status);
      assert.equal(e.param ?? null, param);
      // The gRPC code's name (a request over a limit is INVALID_ARGUMENT there too).
      const code = { 400: 'invalid_argument', 404: 'not_found', 409: 'aborted' }[status];
      assert.equal(e.code, code, JSON.stringify(body));
      return true;
    });
  }
  await assert.rejects(client.responses.create({ model: d.modelName, input: 'x', tools: [{ type: 'web_search' }] }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'tools');
  await assert.rejects(client.responses.create({ model: d.modelName, input: 'x', previous_response_id: 'resp_1_AAAAAAAAAAAAAAAAAAAAAA' }),
    (e) => e instanceof OpenAI.NotFoundError);
});

test('API keys: 401 is an AuthenticationError', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xlstmd-web-keys-'));
  const keys = path.join(dir, 'keys');
  fs.writeFileSync(keys, 'alice key-alice-1234567890\n', { mode: 0o600 });
  const k = await new Daemon(['--api-keys-file', keys]).start();
  try {
    const bad = new OpenAI({ baseURL: k.web + '/v1', apiKey: 'wrong', maxRetries: 0 });
    await assert.rejects(bad.models.list(), (e) => e instanceof OpenAI.AuthenticationError);
    const good = new OpenAI({ baseURL: k.web + '/v1', apiKey: 'key-alice-1234567890', maxRetries: 0 });
    const r = await good.chat.completions.create(ask('Hi'));
    assert.equal(r.choices.length, 1);
  } finally {
    assert.equal(await k.stop(), 0);
  }
});

test('SIGTERM mid-stream ends the stream with an error, not a hang', async () => {
  const t = await new Daemon(['--grace-period', '1s', '--max-tokens-limit', '1000000']).start();
  const c = new OpenAI({ baseURL: t.web + '/v1', apiKey: 'unused', maxRetries: 0 });
  const stream = await c.chat.completions.create(
    { model: t.modelName, messages: [{ role: 'user', content: 'Go on' }], max_tokens: 1000000, stream: true });
  const started = Date.now();
  await assert.rejects(async () => {
    let n = 0;
    for await (const chunk of stream) {
      if (++n === 2) t.proc.kill('SIGTERM');
      void chunk;
    }
  }, (e) => e instanceof OpenAI.APIError);
  assert.ok(Date.now() - started < 15000);
  assert.equal(await t.exited, 0);
});
