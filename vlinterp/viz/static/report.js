(function(){
  // The static report: views (method / layer), token buttons, colour scale, prompt words, per-layer strip.
  var D = JSON.parse(document.getElementById('report-data').textContent);
  var sel = document.getElementById('view'), box = document.getElementById('tokens');
  var img = document.getElementById('overlay'), cap = document.getElementById('caption');
  var meta = document.getElementById('meta');
  var v0 = D.views[0];
  var state = {view: 0, token: v0.start};
  function fmt(x){ if (x === null || x === undefined) return ''; var a = Math.abs(x);
    return (a === 0 || (a >= 1e-3 && a < 1e4)) ? String(Number(x.toPrecision(3))) : x.toExponential(2); }
  function label(v){ return state.token === 'all' ? v.all_label : v.targets[state.token]; }
  function prompt(v){
    var boxEl = document.getElementById('prompt-box'), el = document.getElementById('prompt-tokens');
    el.innerHTML = '';
    boxEl.hidden = !v.text;
    if (!v.text) return;
    var s = state.token === 'all' ? v.text.all : v.text.scores[state.token];
    var mx = 0; for (var i = 0; i < s.length; i++) mx = Math.max(mx, Math.abs(s[i]));
    for (var j = 0; j < v.text.tokens.length; j++){
      var w = mx > 0 ? Math.abs(s[j]) / mx : 0, span = document.createElement('span');
      span.className = 'ptok'; span.dataset.score = String(s[j]); span.title = fmt(s[j]);
      span.style.background = 'rgba(255,140,0,' + (0.08 + 0.82 * w).toFixed(3) + ')';
      span.textContent = v.text.tokens[j];
      var sm = document.createElement('small'); sm.textContent = mx > 0 ? (w * 100).toFixed(0) + '%' : '0%'; span.appendChild(sm);
      el.appendChild(span);
    }
  }
  function layers(v){
    var boxEl = document.getElementById('layers-box'), el = document.getElementById('layers');
    el.innerHTML = '';
    boxEl.hidden = !(v.layers && v.layers.length);
    if (boxEl.hidden) return;
    for (var i = 0; i < v.layers.length; i++){
      var L = v.layers[i], src = state.token === 'all' ? L.all : L.overlays[state.token], whole = false;
      if (!src){ src = L.all; whole = true; }  // too many layers x tokens: the answer's map only
      if (!src) continue;
      var f = document.createElement('figure'); f.className = 'layer';
      var im = document.createElement('img'); im.src = src; im.alt = L.label;
      var c = document.createElement('figcaption'); c.textContent = L.label + (whole ? ' (answer)' : '');
      f.appendChild(im); f.appendChild(c); el.appendChild(f);
    }
  }
  function show(){
    var v = D.views[state.view];
    if (state.token !== 'all' && state.token >= v.targets.length) state.token = 0;
    if (state.token === 'all' && !v.all) state.token = 0;
    img.src = state.token === 'all' ? v.all : v.overlays[state.token];
    cap.textContent = v.name + ': ' + label(v);
    var r = state.token === 'all' ? v.all_range : v.ranges[state.token];
    document.getElementById('cb-lo').textContent = r ? fmt(r[0]) : 'min';
    document.getElementById('cb-hi').textContent = r ? fmt(r[1]) : 'max';
    var bs = box.querySelectorAll('button');
    for (var i = 0; i < bs.length; i++) bs[i].setAttribute('aria-pressed', String(bs[i].dataset.k === String(state.token)));
    prompt(v); layers(v);
    meta.textContent = JSON.stringify(v.meta, null, 1);
    document.body.dataset.view = String(state.view); document.body.dataset.token = String(state.token);
  }
  function buttons(){
    var v = D.views[state.view];
    box.innerHTML = '';
    function add(k, text){
      var b = document.createElement('button'); b.type = 'button'; b.className = 'tok' + (k === 'all' ? ' tok-all' : '');
      b.dataset.k = String(k); b.textContent = text; b.id = 'tok-' + k;
      b.addEventListener('click', function(){ state.token = k; show(); });
      box.appendChild(b);
    }
    if (v.all) add('all', v.all_label);
    for (var k = 0; k < v.targets.length; k++) add(k, v.targets[k]);
  }
  sel.addEventListener('change', function(){ state.view = sel.selectedIndex; buttons(); show(); });
  buttons(); show();
})();
