// vlinterp serve: the explorer page. No libraries; talks to the JSON API of vlinterp/serve/app.py.
(function(){
  'use strict';
  var $ = function(id){ return document.getElementById(id); };
  var S = {info: null, image: null, question: null, ask: null, method: null, token: 'all', view: null,
           attnReady: null, job: null, trace: null, sae: null};

  // ------------------------------------------------------------------ helpers
  function fmt(x){ if (x === null || x === undefined) return ''; var a = Math.abs(x);
    return (a === 0 || (a >= 1e-3 && a < 1e4)) ? String(Number(x.toPrecision(3))) : x.toExponential(2); }
  function el(tag, attrs, text){ var e = document.createElement(tag);
    for (var k in (attrs || {})) { if (k === 'class') e.className = attrs[k]; else e.setAttribute(k, attrs[k]); }
    if (text !== undefined) e.textContent = text; return e; }
  function message(text, kind){ var m = $('message');
    if (!text){ m.hidden = true; m.textContent = ''; return; }
    m.hidden = false; m.className = 'msg ' + (kind || 'error'); m.textContent = text; }
  function api(method, url, body, type){
    var opt = {method: method, headers: {}};
    if (body !== undefined){ opt.body = body; opt.headers['Content-Type'] = type || 'application/json'; }
    return fetch(url, opt).then(function(r){
      return r.json().catch(function(){ return {error: 'the server answered ' + r.status}; }).then(function(d){
        if (!r.ok) throw new Error(d.error || ('HTTP ' + r.status)); return d; });
    });
  }
  function busy(text, frac){ $('busy').hidden = !text; $('status').textContent = text || '';
    $('progress').value = frac || 0; }

  // ------------------------------------------------------------------ jobs
  // Runs one job; the newest job owns the progress bar. Resolves with its result, rejects on error/cancel.
  function runJob(spec){
    return api('POST', '/api/jobs', JSON.stringify(spec)).then(function(job){
      S.job = job.id;
      return new Promise(function(resolve, reject){
        function poll(j){
          if (S.job === j.id) busy(j.step + ' (' + j.progress[0] + '/' + j.progress[1] + ')', j.progress[0] / Math.max(1, j.progress[1]));
          if (j.state === 'done'){ if (S.job === j.id){ busy(''); S.job = null; } resolve(j.result); return; }
          if (j.state === 'error'){ if (S.job === j.id){ busy(''); S.job = null; } reject(new Error(j.error)); return; }
          if (j.state === 'cancelled'){ if (S.job === j.id){ busy(''); S.job = null; } reject(new Error('cancelled')); return; }
          setTimeout(function(){ api('GET', '/api/jobs/' + j.id).then(poll, reject); }, 200);
        }
        poll(job);
      });
    });
  }
  $('cancel').addEventListener('click', function(){ if (S.job) api('POST', '/api/jobs/' + S.job + '/cancel').catch(function(){}); });
  function fail(e){ if (e.message !== 'cancelled') message(e.message); else message('cancelled', 'info'); }

  // ------------------------------------------------------------------ image and question
  function setImage(id, src){
    S.image = id; S.ask = null; S.attnReady = null;
    $('picked').src = src; $('picked').hidden = false; $('input').src = src; $('sae-image').src = src;
    $('ask').disabled = false;
    var bs = $('examples').querySelectorAll('button');
    for (var i = 0; i < bs.length; i++) bs[i].setAttribute('aria-pressed', String(bs[i].dataset.id === id));
  }
  $('file').addEventListener('change', function(){
    var f = $('file').files[0]; if (!f) return;
    message('');
    if (S.info && f.size > S.info.max_upload){ message('the file is ' + (f.size / 1048576).toFixed(1) + ' MiB; the limit is ' + (S.info.max_upload / 1048576).toFixed(1) + ' MiB'); return; }
    busy('uploading', 0);
    api('POST', '/api/images', f, f.type || 'application/octet-stream').then(function(d){
      busy(''); setImage(d.id, '/api/images/' + d.id);
    }, function(e){ busy(''); fail(e); });
  });
  $('ask-form').addEventListener('submit', function(ev){
    ev.preventDefault(); message('');
    if (!S.image){ message('choose or upload an image first'); return; }
    var q = $('question').value.trim();
    if (!q){ message('type a question about the image'); return; }
    S.question = q; S.attnReady = null; S.trace = null; $('trace-out').innerHTML = ''; $('sae-out').innerHTML = '';
    var method = $('method').value || S.info.default_method;
    runJob({kind: 'ask', image: S.image, question: q, method: method}).then(showAnswer, fail);
  });

  // ------------------------------------------------------------------ answer and maps
  function showAnswer(r){
    S.ask = r; S.method = r.method; S.view = r.view;
    S.token = r.tokens.length > 1 ? 'all' : 0;
    $('answer-box').hidden = false; $('answer').textContent = r.answer;
    $('probs').textContent = '(' + r.tokens.map(function(t, i){ return t + ' ' + r.probs[i].toFixed(3); }).join(', ') + ')';
    var box = $('tokens'); box.innerHTML = '';
    function add(k, text){
      var b = el('button', {type: 'button', id: 'tok-' + k, 'data-k': String(k), 'aria-pressed': 'false', class: 'tok'}, text);
      b.addEventListener('click', function(){ S.token = k; renderTokens(); renderMaps(); if (!$('pane-attn').hidden) attnView(); });
      box.appendChild(b);
    }
    if (r.tokens.length > 1) add('all', 'answer (mean)');
    r.tokens.forEach(function(t, k){ add(k, t); });
    renderTokens(); renderMaps(); renderSaeTokens();
    if (!$('pane-attn').hidden) openAttention();
  }
  function renderTokens(){
    var bs = $('tokens').querySelectorAll('button');
    for (var i = 0; i < bs.length; i++) bs[i].setAttribute('aria-pressed', String(bs[i].dataset.k === String(S.token)));
    document.body.dataset.token = String(S.token);
  }
  function renderMaps(){
    var v = S.view; if (!v) return;
    var all = S.token === 'all' && v.all;
    var k = all ? null : (S.token === 'all' ? 0 : S.token);
    $('overlay').src = all ? v.all : v.overlays[k];
    $('caption').textContent = v.name + ': ' + (all ? v.all_label : v.targets[k]);
    var rg = all ? v.all_range : v.ranges[k];
    $('cb-lo').textContent = rg ? fmt(rg[0]) : ''; $('cb-hi').textContent = rg ? fmt(rg[1]) : '';
    var pb = $('prompt-box'), pt = $('prompt-tokens');
    if (v.text){
      pb.hidden = false; chips(pt, v.text.tokens, all ? v.text.all : v.text.scores[k]);
    } else { pb.hidden = true; pt.innerHTML = ''; }
    var lb = $('layers-box'), ls = $('layers');
    ls.innerHTML = '';
    if (v.layers && v.layers.length){
      lb.hidden = false;
      v.layers.forEach(function(L){
        var src = all ? L.all : L.overlays[k], whole = !src; if (whole) src = L.all; if (!src) return;
        var f = el('figure', {class: 'layer'}); var im = el('img', {alt: L.label});
        im.src = src; f.appendChild(im); f.appendChild(el('figcaption', {}, L.label + (whole ? ' (answer)' : ''))); ls.appendChild(f);
      });
    } else lb.hidden = true;
    document.body.dataset.method = v.name;
  }
  function chips(box, tokens, scores){
    box.innerHTML = ''; var mx = 0;
    scores.forEach(function(s){ mx = Math.max(mx, Math.abs(s)); });
    tokens.forEach(function(t, j){
      var w = mx > 0 ? Math.abs(scores[j]) / mx : 0;
      var c = el('span', {class: 'ptok', title: fmt(scores[j])}, t);
      c.dataset.score = String(scores[j]);
      c.style.background = 'rgba(255,140,0,' + (0.08 + 0.82 * w).toFixed(3) + ')';
      c.appendChild(el('small', {}, (w * 100).toFixed(0) + '%')); box.appendChild(c);
    });
  }
  $('method').addEventListener('change', function(){
    if (!S.ask) return;
    var m = $('method').value; message('');
    runJob({kind: 'map', image: S.ask.image, question: S.ask.question, method: m}).then(function(r){
      S.view = r.view; S.method = r.method; renderMaps(); }, fail);
  });

  // ------------------------------------------------------------------ tabs
  function tab(name){
    ['maps', 'attn', 'trace', 'sae'].forEach(function(p){
      $('pane-' + p).hidden = p !== name; $('tab-' + p).setAttribute('aria-selected', String(p === name)); });
    if (name === 'attn') openAttention();
  }
  ['maps', 'attn', 'trace', 'sae'].forEach(function(p){ $('tab-' + p).addEventListener('click', function(){ tab(p); }); });

  // ------------------------------------------------------------------ attention browser
  function openAttention(){
    if (!S.ask) return;
    var key = S.ask.image + '|' + S.ask.question;
    if (S.attnReady === key){ attnView(); return; }
    runJob({kind: 'attention', image: S.ask.image, question: S.ask.question}).then(function(){
      S.attnReady = key; attnView(); }, fail);
  }
  function attnView(){
    if (!S.ask || !S.attnReady) return;
    var p = new URLSearchParams({image: S.ask.image, question: S.ask.question, layer: $('layer').value,
                                 head: $('head').value, token: String(S.token)});
    api('GET', '/api/attention?' + p.toString()).then(function(r){
      $('attn-overlay').src = r.overlay;
      var tok = S.token === 'all' ? 'answer (mean)' : S.ask.tokens[S.token];
      $('attn-caption').textContent = 'layer ' + r.layer + ', head ' + r.head + ': ' + tok;
      $('attn-lo').textContent = fmt(r.range[0]); $('attn-hi').textContent = fmt(r.range[1]);
      var m = $('attn-mass'); m.innerHTML = '';
      [['image patches', r.mass.image], ['prompt words', r.mass.prompt], ['other tokens (template, start, answer)', r.mass.other]].forEach(function(x){
        m.appendChild(el('div', {}, x[0] + ': ' + (100 * x[1]).toFixed(1) + '%')); });
      chips($('attn-tokens'), r.tokens, r.weights);
      document.body.dataset.attn = r.layer + '/' + r.head + '/' + r.token;
    }, fail);
  }
  $('layer').addEventListener('change', attnView); $('head').addEventListener('change', attnView);

  // ------------------------------------------------------------------ causal trace
  function rdbu(v, lim){  // diverging: blue (negative) - white - red (positive)
    var t = Math.max(-1, Math.min(1, v / lim)), a = [247, 247, 247], b = t >= 0 ? [178, 24, 43] : [33, 102, 172], s = Math.abs(t);
    return 'rgb(' + [0, 1, 2].map(function(i){ return Math.round(a[i] + (b[i] - a[i]) * s); }).join(',') + ')';
  }
  $('trace-run').addEventListener('click', function(){
    if (!S.ask){ message('ask a question first: the trace follows its answer'); return; }
    message('');
    runJob({kind: 'trace', image: S.ask.image, question: S.ask.question, words: $('trace-words').value,
            samples: parseInt($('trace-samples').value, 10)}).then(showTrace, fail);
  });
  function showTrace(r){
    S.trace = r; var out = $('trace-out'); out.innerHTML = '';
    var lim = 1; r.rr.forEach(function(c){ c.forEach(function(row){ row.forEach(function(v){ lim = Math.max(lim, Math.abs(v)); }); }); });
    out.appendChild(el('p', {}, 'P("' + r.target + '"): clean ' + r.p_clean.toFixed(3) + ', corrupted ' + r.p_corrupt.toFixed(3) +
      ' · object words: ' + (r.object_words || '(none)') + ' · object patches: ' + r.object_patches + ' · ' + r.samples + ' noise sample(s)'));
    var lg = el('div', {class: 'legend'}); lg.appendChild(el('span', {}, fmt(-lim)));
    lg.appendChild(el('span', {class: 'ramp'})); lg.appendChild(el('span', {}, fmt(lim) + ' recovery rate')); out.appendChild(lg);
    var wrap = el('div', {class: 'rr-wrap', id: 'trace-grid'}); out.appendChild(wrap);
    var names = {attn: 'attention output', mlp: 'MLP output', resid: 'residual state'};
    r.components.forEach(function(c, ci){
      var t = el('table', {class: 'rr'}); t.appendChild(el('caption', {}, names[c] || c));
      for (var li = r.layers.length - 1; li >= 0; li--){
        var tr = el('tr'); tr.appendChild(el('th', {}, 'layer ' + r.layers[li]));
        r.positions.forEach(function(p, gi){
          var v = r.rr[ci][li][gi], td = el('td', {class: 'rr-cell', title: names[c] + ', layer ' + r.layers[li] + ', ' + p + ': RR ' + v.toFixed(3)});
          td.style.background = rdbu(v, lim); td.textContent = Math.abs(v) >= 0.1 ? v.toFixed(1) : ''; tr.appendChild(td);
        });
        t.appendChild(tr);
      }
      var hr = el('tr'); hr.appendChild(el('th'));
      r.positions.forEach(function(p){ hr.appendChild(el('th', {class: 'pos'}, p)); }); t.appendChild(hr);
      wrap.appendChild(t);
    });
  }

  // ------------------------------------------------------------------ SAE features
  function renderSaeTokens(){
    var box = $('sae-tokens'); box.innerHTML = '';
    if (!S.ask) return;
    S.ask.sequence.forEach(function(s){
      var b = el('button', {type: 'button', class: 'tok seq-' + s.kind, 'data-pos': String(s.pos)}, s.text);
      b.addEventListener('click', function(){ saeAt({pos: s.pos}); }); box.appendChild(b);
    });
  }
  $('sae-image').addEventListener('click', function(ev){
    var im = $('sae-image'), r = im.getBoundingClientRect();
    var x = (ev.clientX - r.left) / r.width * im.naturalWidth, y = (ev.clientY - r.top) / r.height * im.naturalHeight;
    saeAt({x: x, y: y});
  });
  function saeAt(where){
    if (!S.ask){ message('ask a question first'); return; }
    message('');
    runJob({kind: 'sae', image: S.ask.image, question: S.ask.question, sae: parseInt($('sae-site').value, 10), where: where})
      .then(showSae, fail);
  }
  function showSae(r){
    $('sae-where').textContent = r.where + ' · ' + r.active + ' active features';
    var out = $('sae-out'); out.innerHTML = '';
    if (r.note) out.appendChild(el('div', {class: 'msg info'}, r.note));
    if (!r.features.length){ out.appendChild(el('p', {}, 'no feature is active here')); return; }
    var t = el('table', {class: 't feat'}), h = el('tr');
    ['feature', 'activation here', 'max on this image', 'where it fires on this image', 'dashboard'].forEach(function(x){ h.appendChild(el('th', {}, x)); });
    t.appendChild(h);
    r.features.forEach(function(f){
      var tr = el('tr', {class: 'feature-row'});
      tr.appendChild(el('td', {class: 'num'}, String(f.feature)));
      tr.appendChild(el('td', {class: 'num'}, fmt(f.activation)));
      tr.appendChild(el('td', {class: 'num'}, fmt(f.image_max)));
      var td = el('td'), im = el('img', {alt: 'feature ' + f.feature}); im.src = f.map; td.appendChild(im); tr.appendChild(td);
      var dl = el('td');
      if (f.dashboard){ var a = el('a', {href: f.dashboard, target: '_blank', rel: 'noopener'}, 'open'); dl.appendChild(a); }
      else dl.textContent = '-';
      tr.appendChild(dl); t.appendChild(tr);
    });
    out.appendChild(t);
  }

  // ------------------------------------------------------------------ start
  api('GET', '/api/info').then(function(info){
    S.info = info;
    $('model').textContent = info.model + ' (' + info.family + ', ' + info.layers + ' layers × ' + info.heads + ' heads)';
    info.methods.forEach(function(m){ var o = el('option', {value: m}, m); if (m === info.default_method) o.selected = true; $('method').appendChild(o); });
    var ls = [['mean', 'mean']].concat(Array.from({length: info.layers}, function(_, i){ return [String(i), String(i)]; }));
    ls.forEach(function(x){ $('layer').appendChild(el('option', {value: x[0]}, x[1])); });
    var hs = [['mean', 'mean']].concat(Array.from({length: info.heads}, function(_, i){ return [String(i), String(i)]; }));
    hs.forEach(function(x){ $('head').appendChild(el('option', {value: x[0]}, x[1])); });
    var cbs = document.querySelectorAll('img.cbar'); for (var i = 0; i < cbs.length; i++) cbs[i].src = info.colorbar;
    info.examples.forEach(function(ex){
      var b = el('button', {type: 'button', title: ex.name, 'data-id': ex.id, 'aria-pressed': 'false'});
      var im = el('img', {alt: ex.name}); im.src = '/api/images/' + ex.id; b.appendChild(im);
      b.addEventListener('click', function(){ message(''); setImage(ex.id, '/api/images/' + ex.id); });
      $('examples').appendChild(b);
    });
    if (info.saes.length){
      $('sae-ui').hidden = false;
      info.saes.forEach(function(s){ $('sae-site').appendChild(el('option', {value: String(s.index)}, s.site + ' (' + s.d_sae + ' features' + (s.dashboards ? '' : ', no dashboards') + ')')); });
    } else {
      var n = $('sae-none'); n.hidden = false;
      n.textContent = 'No SAE is loaded. Start the server with --sae DIR (an SAE trained by `vlinterp sae harvest` and `vlinterp sae train`) to list the features active at a patch or token.';
    }
    document.body.dataset.ready = 'true';
  }, function(e){ message('cannot reach the server: ' + e.message); });
})();
