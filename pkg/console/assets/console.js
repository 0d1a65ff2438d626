// rollguard console: live refresh and the actions. The pages work without
// it; everything here is progressive. The API token lives in this tab's
// sessionStorage and travels only in an Authorization header, never in a
// URL, so no link, log or referrer carries it.
(function () {
  'use strict';

  var TOKEN_KEY = 'rollguard.console.token';
  var body = document.body;
  var refreshSecs = Number(body.getAttribute('data-refresh') || 0);
  var lastOK = Date.now();

  function token() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; }
  }
  function setToken(t) {
    try {
      if (t) { sessionStorage.setItem(TOKEN_KEY, t); } else { sessionStorage.removeItem(TOKEN_KEY); }
    } catch (e) { /* storage off: the token lasts as long as the page */ }
  }

  // --- live refresh ----------------------------------------------------

  function conn(msg) {
    var el = document.getElementById('conn');
    if (el) { el.textContent = msg; }
  }

  // focusKey finds the focused element again after a region is replaced.
  function focusKey(el) {
    if (!el || el === document.body) { return null; }
    if (el.id) { return '#' + CSS.escape(el.id); }
    var href = el.getAttribute && el.getAttribute('href');
    if (href) { return 'a[href="' + CSS.escape(href) + '"]'; }
    return null;
  }

  function refresh() {
    if (document.hidden || document.querySelector('dialog[open]')) { return; }
    fetch(location.href, { headers: { 'Accept': 'text/html' }, cache: 'no-store', credentials: 'omit' })
      .then(function (r) {
        if (!r.ok) { throw new Error('HTTP ' + r.status); }
        return r.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, 'text/html');
        var active = document.activeElement;
        var key = null;
        document.querySelectorAll('[data-live]').forEach(function (el) {
          var fresh = doc.getElementById(el.id);
          if (!fresh) { return; }
          if (el.contains(active)) { key = focusKey(active); }
          // What the reader opened stays open.
          el.querySelectorAll('details[open][id]').forEach(function (d) {
            var again = fresh.querySelector('#' + CSS.escape(d.id));
            if (again) { again.open = true; }
          });
          el.replaceWith(document.adoptNode(fresh));
        });
        if (key) {
          var again = document.querySelector(key);
          if (again) { again.focus({ preventScroll: true }); }
        }
        lastOK = Date.now();
        conn('');
      })
      .catch(function (err) {
        var secs = Math.round((Date.now() - lastOK) / 1000);
        conn('Cannot reach rollguard (' + err.message + '): what you see is ' + secs + ' s old.');
      });
  }

  if (refreshSecs > 0) {
    setInterval(refresh, refreshSecs * 1000);
  }

  // --- sign-in ----------------------------------------------------------

  function cloneTemplate(id) {
    var t = document.getElementById(id);
    return t ? t.content.cloneNode(true) : null;
  }

  function renderAuth() {
    var slot = document.getElementById('auth-slot');
    if (!slot) { return; }
    slot.textContent = '';
    if (token()) {
      slot.appendChild(cloneTemplate('tmpl-auth-on'));
      document.getElementById('auth-lock').addEventListener('click', function () {
        setToken('');
        removeActions();
        renderAuth();
      });
      showActions();
      return;
    }
    slot.appendChild(cloneTemplate('tmpl-auth-form'));
    var form = document.getElementById('auth-form');
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      var input = form.querySelector('input[name=token]');
      var msg = form.querySelector('.auth-msg');
      var t = input.value.trim();
      msg.textContent = 'Checking…';
      fetch('/console/auth', { method: 'POST', headers: { 'Authorization': 'Bearer ' + t }, credentials: 'omit', cache: 'no-store' })
        .then(function (r) {
          if (r.status === 204) {
            setToken(t);
            renderAuth();
            return;
          }
          return r.text().then(function (text) { msg.textContent = 'Refused: ' + text.trim(); input.focus(); });
        })
        .catch(function (err) { msg.textContent = 'Cannot reach rollguard: ' + err.message; });
    });
  }

  // --- actions ----------------------------------------------------------

  function removeActions() {
    var a = document.getElementById('actions');
    if (a) { a.remove(); }
  }

  function showActions() {
    if (document.getElementById('actions')) { return; }
    var tmpl = document.getElementById('tmpl-actions');
    if (!tmpl) { return; }
    tmpl.after(tmpl.content.cloneNode(true));
    document.querySelectorAll('#actions form.act').forEach(function (form) {
      form.addEventListener('submit', function (ev) {
        ev.preventDefault();
        confirmAction(form);
      });
    });
  }

  function result(msg, cls) {
    var el = document.getElementById('act-result');
    if (!el) { return; }
    el.className = 'act-result ' + (cls || '');
    el.textContent = msg;
  }

  function para(text) {
    var p = document.createElement('p');
    p.textContent = text;
    return p;
  }

  function confirmAction(form) {
    var kind = form.getAttribute('data-kind');
    var target = form.getAttribute('data-target');
    var reason = form.querySelector('input[name=reason]').value.trim();
    var actionEl = form.querySelector('[name=action]');
    var action = actionEl ? actionEl.value : '';
    if (!reason) { result('A reason is required.', 'error'); return; }
    var dialog = document.getElementById('confirm');
    var head = document.getElementById('confirm-h');
    var content = document.getElementById('confirm-body');
    var ok = document.getElementById('confirm-ok');
    content.textContent = '';
    content.appendChild(para('Reason: ' + reason));
    if (kind === 'rollback') {
      head.textContent = 'Roll back ' + target + ' with plan ' + action + '?';
      ok.textContent = 'Roll back now';
      ok.disabled = true;
      var loading = para('Reading the plan from the cluster…');
      content.appendChild(loading);
      fetch('/targets/' + encodeURIComponent(target) + '/plan?action=' + encodeURIComponent(action), { credentials: 'omit', cache: 'no-store' })
        .then(function (r) { return r.text(); })
        .then(function (html) {
          var doc = new DOMParser().parseFromString(html, 'text/html');
          var plan = doc.getElementById('plan');
          loading.replaceWith(plan ? document.adoptNode(plan) : para('No plan could be read.'));
          ok.disabled = !plan || !!plan.querySelector('.plan-error');
        })
        .catch(function (err) { loading.textContent = 'Cannot read the plan: ' + err.message; });
    } else if (kind === 'freeze') {
      head.textContent = 'Freeze ' + target + '?';
      ok.textContent = 'Freeze';
      ok.disabled = false;
      content.appendChild(para('While frozen, rollguard rolls nothing back on ' + target + ': a firing trigger pages "cannot roll back: frozen" instead.'));
    } else {
      head.textContent = 'Unfreeze ' + target + '?';
      ok.textContent = 'Unfreeze';
      ok.disabled = false;
      content.appendChild(para('Automatic rollbacks of ' + target + ' resume, through the other interlocks.'));
    }
    dialog.returnValue = '';
    dialog.addEventListener('close', function onClose() {
      dialog.removeEventListener('close', onClose);
      if (dialog.returnValue === 'ok') { send(kind, target, action, reason); }
    });
    dialog.showModal();
  }

  function send(kind, target, action, reason) {
    var payload = kind === 'rollback' ? { action: action, reason: reason } : { reason: reason };
    result('Sending…', '');
    fetch('/api/v1/targets/' + encodeURIComponent(target) + '/' + kind, {
      method: 'POST',
      headers: { 'Authorization': 'Bearer ' + token(), 'Content-Type': 'application/json' },
      body: JSON.stringify(payload),
      credentials: 'omit',
      cache: 'no-store'
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (r.ok) {
          result((kind === 'rollback' ? (data.detail || 'accepted') : kind + ' done') + '.', 'done');
          refresh();
          return;
        }
        var why = 'Refused (' + r.status + '): ' + (data.error || r.statusText);
        if (r.status === 401 || r.status === 403) {
          // The token no longer works: lock, and say why where the
          // token is typed again.
          setToken('');
          removeActions();
          renderAuth();
          var msg = document.querySelector('#auth-form .auth-msg');
          if (msg) { msg.textContent = why; }
          return;
        }
        result(why, 'error');
      });
    }).catch(function (err) { result('Cannot reach rollguard: ' + err.message, 'error'); });
  }

  renderAuth();
})();
