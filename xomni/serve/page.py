"""The web page served at `/`: one static HTML file (no build step, no external assets), kept in Python so that
it installs with the package. It talks to the same API as any client: POST /v1/images/generations with
"stream": true (previews sharpen row by row as tokens arrive), POST /v1/captions, GET /v1/models.
For tests, `window.xomniFrames` lists the stream events the page has shown, in order."""

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>xomni</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:15px system-ui,sans-serif;margin:0;background:#f4f4f6;color:#222}
 header{background:#1d2330;color:#fff;padding:10px 18px;display:flex;gap:18px;align-items:center}
 header b{font-size:18px} nav button{background:none;border:0;color:#bbb;font-size:15px;cursor:pointer;padding:6px}
 nav button.on{color:#fff;border-bottom:2px solid #8cf} main{padding:16px 18px;max-width:1000px}
 section{display:none} section.on{display:block}
 textarea{width:100%;height:54px;font:inherit;box-sizing:border-box}
 .row{display:flex;flex-wrap:wrap;gap:12px;margin:8px 0;align-items:end}
 label{display:flex;flex-direction:column;font-size:12px;color:#555} input[type=number]{width:90px}
 button.go{padding:7px 18px;font-size:15px;background:#2962ff;color:#fff;border:0;border-radius:4px;cursor:pointer}
 button.go:disabled{background:#889} #status,#cap-status{color:#555;margin:6px 0;min-height:1.2em}
 .err{color:#b00020} .pic{image-rendering:pixelated;width:384px;border:1px solid #ccc;background:#fff}
 #previews{display:flex;flex-wrap:wrap;gap:10px} .pv{font-size:12px;color:#666}
 #gallery{display:flex;flex-wrap:wrap;gap:14px;margin-top:14px}
 .card{background:#fff;padding:8px;border-radius:6px;box-shadow:0 1px 3px #0002;font-size:12px}
 .card a,.card button{font-size:12px;margin-right:8px} table{border-collapse:collapse}
 td{padding:3px 10px 3px 0;vertical-align:top} td:first-child{color:#666} code{word-break:break-all}
</style></head>
<body>
<header><b>xomni</b><span id="model-name"></span>
 <nav><button data-tab="gen" class="on">Generate</button><button data-tab="cap">Caption</button>
 <button data-tab="card">Model</button></nav></header>
<main>
<section id="gen" class="on">
 <textarea id="prompt" aria-label="prompt"></textarea>
 <div class="row">
  <label>temperature<input id="temperature" type="number" step="0.05" min="0.05"></label>
  <label>top-k<input id="top_k" type="number" min="0" step="1"></label>
  <label>top-p<input id="top_p" type="number" min="0.01" max="1" step="0.05"></label>
  <label>min-p<input id="min_p" type="number" min="0" max="0.99" step="0.01"></label>
  <label>cfg<input id="cfg" type="number" min="1" max="20" step="0.25"></label>
  <label>seed (blank: random)<input id="seed" type="number" min="0" step="1"></label>
  <label>images<input id="n" type="number" min="1" max="10" value="2"></label>
  <label><span><input id="use-best-of" type="checkbox"> best of</span>
   <input id="best_of" type="number" min="2" max="8" value="4"></label>
  <button class="go" id="generate">Generate</button>
 </div>
 <div id="status"></div>
 <div id="previews"></div>
 <div id="gallery"></div>
</section>
<section id="cap">
 <p>Upload an image; the same model reads it back as text.</p>
 <div class="row"><input id="cap-file" type="file" accept="image/*"><button class="go" id="cap-go">Read</button></div>
 <div id="cap-status"></div><img id="cap-img" class="pic" alt="" hidden>
 <p><b id="cap-text"></b></p>
</section>
<section id="card"><table id="card-table"></table></section>
</main>
<script>
const $ = id => document.getElementById(id);
window.xomniFrames = [];
let card = null;
for (const b of document.querySelectorAll('nav button')) b.onclick = () => {
  document.querySelectorAll('nav button, section').forEach(e => e.classList.remove('on'));
  b.classList.add('on'); $(b.dataset.tab).classList.add('on');
};
function status(el, msg, bad) { el.textContent = msg; el.className = bad ? 'err' : ''; }
async function apiError(r) {
  try { const j = await r.json(); return `${r.status}: ${j.error.message}`; } catch (e) { return `HTTP ${r.status}`; }
}
async function loadCard() {
  const r = await fetch('/v1/models'); card = (await r.json()).data[0];
  $('model-name').textContent = `${card.id} · ${card.image_size}`;
  if (!$('prompt').value) $('prompt').value = card.example_prompt;
  const s = card.sampling_defaults;
  for (const [k, v] of [['temperature', s.temperature], ['top_k', s.top_k], ['top_p', s.top_p],
                        ['min_p', s.min_p], ['cfg', s.cfg_scale]]) $(k).placeholder = v;
  const acc = card.accuracy || {}, cap = card.caption_accuracy || {};
  const rows = [['model', card.id], ['image size', card.image_size + ' (width x height)'],
    ['token grid', card.token_grid.join(' x ')], ['charset', card.charset || 'any'],
    ['prompt template', card.prompt_template], ['max prompt tokens', card.max_prompt_tokens],
    ['sampling defaults', JSON.stringify(s)],
    ['drawing accuracy', acc.text_exact_match == null ? 'not measured' :
      `exact text match ${acc.text_exact_match.toFixed(3)} ` +
      `(95% CI ${(acc.ci95_exact_match||[]).map(x => x.toFixed(2)).join('–')}), ` +
      `CER ${acc.cer.toFixed(3)}, n=${acc.n}`],
    ['measured by', acc.measured_by || ''],
    ['reading accuracy', cap.caption_exact == null ? 'not measured' :
      `exact caption ${cap.caption_exact} (95% CI ${(cap.ci95||[]).join('–')}), n=${cap.n}, beams ${cap.num_beams}`]];
  const t = $('card-table'); t.innerHTML = '';
  for (const [k, v] of rows) { const tr = t.insertRow(); tr.insertCell().textContent = k;
    const c = tr.insertCell(); const code = document.createElement('code'); code.textContent = v; c.appendChild(code); }
}
function numberField(body, id, int) {
  const v = $(id).value.trim(); if (v === '') return;
  body[id] = int ? parseInt(v, 10) : parseFloat(v);
}
function previewSlot(i) {
  let d = document.getElementById('pv' + i);
  if (!d) { d = document.createElement('div'); d.id = 'pv' + i;
    d.innerHTML = '<img class="pic preview" alt="preview"><div class="pv"></div>'; $('previews').appendChild(d); }
  return d;
}
function addToGallery(it, seed, prompt) {
  const c = document.createElement('div'); c.className = 'card';
  const img = document.createElement('img'); img.className = 'pic final'; img.alt = prompt;
  img.src = 'data:image/png;base64,' + it.b64_json; c.appendChild(img);
  const info = document.createElement('div');
  let txt = `seed ${seed} #${it.index} · logprob ${it.logprob.toFixed(1)}`;
  if (it.rewards) txt += ` · reward ${it.rewards.total.toFixed(3)} (best of ${it.rewards.candidates.length})`;
  info.textContent = txt; c.appendChild(info);
  const a = document.createElement('a'); a.href = img.src; a.download = `xomni-${seed}-${it.index}.png`;
  a.textContent = 'download'; c.appendChild(a);
  const rb = document.createElement('button'); rb.textContent = 'read it';
  rb.onclick = async () => { rb.disabled = true; const t = await caption(it.b64_json);
    info.textContent = txt + ' · reads: ' + t; rb.disabled = false; };
  c.appendChild(rb);
  $('gallery').prepend(c);
}
async function generate() {
  const body = {prompt: $('prompt').value, n: parseInt($('n').value || '1', 10), stream: true};
  numberField(body, 'temperature'); numberField(body, 'top_k', true); numberField(body, 'top_p');
  numberField(body, 'min_p'); numberField(body, 'cfg'); numberField(body, 'seed', true);
  if ($('use-best-of').checked) body.best_of = parseInt($('best_of').value, 10);
  $('generate').disabled = true; $('previews').innerHTML = ''; status($('status'), 'queued…');
  const t0 = performance.now();
  try {
    const r = await fetch('/v1/images/generations', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                      body: JSON.stringify(body)});
    if (!r.ok) { status($('status'), await apiError(r), true); return; }
    const reader = r.body.getReader(), dec = new TextDecoder(); let buf = '';
    for (;;) {
      const {value, done} = await reader.read(); if (done) break;
      buf += dec.decode(value, {stream: true}); let k;
      while ((k = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, k); buf = buf.slice(k + 2);
        let ev = 'message', data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('event: ')) ev = line.slice(7); else if (line.startsWith('data: ')) data += line.slice(6);
        }
        handle(ev, JSON.parse(data), body, t0);
      }
    }
  } catch (e) { status($('status'), String(e), true);
  } finally { $('generate').disabled = false; }
}
function handle(ev, d, body, t0) {
  window.xomniFrames.push(ev);
  if (ev === 'image_generation.partial_image') {
    const s = previewSlot(d.image_index); s.querySelector('img').src = 'data:image/png;base64,' + d.b64_json;
    s.querySelector('.pv').textContent = `preview ${d.tokens}/${d.total_tokens} tokens`;
    s.dataset.frames = (parseInt(s.dataset.frames || '0', 10) + 1).toString();
    status($('status'), `sampling… ${d.tokens}/${d.total_tokens} tokens`);
  } else if (ev === 'image_generation.completed') {
    const s = previewSlot(d.image_index); s.querySelector('.pv').textContent += ' · final image below';
  } else if (ev === 'done') {
    for (const it of [...d.data].reverse()) addToGallery(it, d.seed, body.prompt);   // newest first, in order
    status($('status'), `done in ${((performance.now() - t0) / 1000).toFixed(2)} s · seed ${d.seed} · ` +
           `batch of ${d.timings.batch_rows} rows`);
  } else if (ev === 'error') { status($('status'), d.error.message, true); }
}
async function caption(b64) {
  const r = await fetch('/v1/captions', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                          body: JSON.stringify({image: b64})});
  if (!r.ok) throw new Error(await apiError(r));
  return (await r.json()).text;
}
async function captionUpload() {
  const f = $('cap-file').files[0]; if (!f) { status($('cap-status'), 'choose an image first', true); return; }
  const url = await new Promise((ok, bad) => { const fr = new FileReader(); fr.onload = () => ok(fr.result);
                                                fr.onerror = bad; fr.readAsDataURL(f); });
  $('cap-img').src = url; $('cap-img').hidden = false; $('cap-text').textContent = '';
  status($('cap-status'), 'reading…');
  try { $('cap-text').textContent = await caption(url); status($('cap-status'), '');
  } catch (e) { status($('cap-status'), String(e.message || e), true); }
}
$('generate').onclick = generate; $('cap-go').onclick = captionUpload;
$('prompt').addEventListener('keydown', e => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) generate(); });
loadCard().catch(e => status($('status'), 'cannot load the model card: ' + e, true));
</script></body></html>
"""
