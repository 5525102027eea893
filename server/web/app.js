// The built-in chat page: the session API over SSE (docs/web.md). Everything the server
// sends is shown with textContent, never parsed as HTML.
'use strict';

const $ = (id) => document.getElementById(id);
const SESSION_KEY = 'xlstmd.session';
const API_KEY = 'xlstmd.apiKey';  // sessionStorage only: gone when the tab closes
let controller = null;            // the running turn's AbortController

function headers(json) {
  const h = {};
  if (json) h['Content-Type'] = 'application/json';
  const key = sessionStorage.getItem(API_KEY);
  if (key) h['Authorization'] = 'Bearer ' + key;
  return h;
}

function setStatus(text) { $('status').textContent = text || ''; }

function showSession(info) {
  $('session').textContent = info ? info.session_id : 'none';
  $('version').textContent = info ? String(info.version) : '-';
}

function addMessage(kind, text) {
  const div = document.createElement('div');
  div.className = 'msg ' + kind;
  div.textContent = text;
  $('log').appendChild(div);
  $('log').scrollTop = $('log').scrollHeight;
  return div;
}

// fetch with the API-key flow: a 401 asks for a key once and retries.
async function api(method, path, body) {
  for (let attempt = 0; attempt < 2; attempt++) {
    const res = await fetch(path, {
      method, headers: headers(body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: controller && path.endsWith('/turns') ? controller.signal : undefined,
    });
    if (res.status !== 401 || attempt === 1) return res;
    const key = window.prompt('This server needs an API key:');
    if (!key) return res;
    sessionStorage.setItem(API_KEY, key.trim());
  }
}

async function errorText(res) {
  try {
    const j = await res.json();
    return (j.error && j.error.message) || res.statusText;
  } catch (e) {
    return res.statusText;
  }
}

async function newSession() {
  const res = await api('POST', '/v1/sessions', {});
  if (!res.ok) throw new Error(await errorText(res));
  const info = await res.json();
  localStorage.setItem(SESSION_KEY, info.session_id);
  showSession(info);
  return info;
}

async function currentSession() {
  const id = localStorage.getItem(SESSION_KEY);
  if (!id) return null;
  const res = await api('GET', '/v1/sessions/' + encodeURIComponent(id));
  if (!res.ok) {
    localStorage.removeItem(SESSION_KEY);
    return null;
  }
  const info = await res.json();
  showSession(info);
  return info;
}

// Reads an SSE body, calling onEvent(name, data) per event.
async function readEvents(res, onEvent) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let name = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) name = line.slice(7);
        else if (line.startsWith('data: ')) data.push(line.slice(6));
      }
      if (data.length) onEvent(name, JSON.parse(data.join('\n')));
    }
  }
}

async function send(text) {
  let info = (await currentSession()) || (await newSession());
  addMessage('user', text);
  const out = addMessage('assistant', '');
  controller = new AbortController();
  $('stop').disabled = false;
  $('send').disabled = true;
  const sampling = {
    temperature: Number($('temperature').value),
    max_tokens: Number($('max-tokens').value),
  };
  try {
    const res = await api('POST', '/v1/sessions/' + encodeURIComponent(info.session_id) + '/turns',
      { message: text, sampling, expected_version: String(info.version) });
    if (!res.ok) throw new Error(await errorText(res));
    await readEvents(res, (name, data) => {
      if (name === 'delta') out.textContent += data.text || '';
      else if (name === 'finished') {
        info = { session_id: info.session_id, version: Number(data.session_version) };
        showSession(info);
      } else if (name === 'error') setStatus(data.message);
    });
  } catch (e) {
    if (e.name === 'AbortError') {
      out.classList.add('note');
      out.textContent += ' [stopped: the session stays at its previous version]';
    } else {
      setStatus(e.message);
    }
  } finally {
    controller = null;
    $('stop').disabled = true;
    $('send').disabled = false;
  }
}

async function start() {
  try {
    const res = await api('GET', '/v1/models');
    if (res.ok) $('model').textContent = (await res.json()).data[0].id;
    const info = await currentSession();
    if (info) addMessage('note', 'Resumed session ' + info.session_id + ' at version ' + info.version + '.');
  } catch (e) {
    setStatus(e.message);
  }
  $('form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = $('input').value;
    if (!text.trim() || controller) return;
    $('input').value = '';
    setStatus('');
    send(text);
  });
  $('input').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey) {
      ev.preventDefault();
      $('form').requestSubmit();
    }
  });
  $('stop').addEventListener('click', () => { if (controller) controller.abort(); });
  $('new').addEventListener('click', async () => {
    if (controller) return;
    $('log').textContent = '';
    try { await newSession(); } catch (e) { setStatus(e.message); }
  });
  $('fork').addEventListener('click', async () => {
    const id = localStorage.getItem(SESSION_KEY);
    if (!id || controller) return;
    const res = await api('POST', '/v1/sessions/' + encodeURIComponent(id) + '/fork');
    if (!res.ok) return setStatus(await errorText(res));
    const info = await res.json();
    localStorage.setItem(SESSION_KEY, info.session_id);
    showSession(info);
    addMessage('note', 'Forked into session ' + info.session_id + '.');
  });
}

start();
