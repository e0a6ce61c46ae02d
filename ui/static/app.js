// gwelb dashboard: live updates over Server-Sent Events, and a confirm
// step for disruptive buttons. The server renders every fragment with
// html/template (escaped); this file only swaps them in. No inline script
// anywhere: the Content-Security-Policy allows this file and nothing else.
(function () {
  'use strict';

  document.addEventListener('click', function (e) {
    var b = e.target.closest ? e.target.closest('button[data-confirm]') : null;
    if (b && !window.confirm(b.getAttribute('data-confirm'))) {
      e.preventDefault();
    }
  });

  var live = document.getElementById('live');
  var status = document.getElementById('live-status');
  if (!live || !live.dataset.events || !window.EventSource) {
    return;
  }

  function setStatus(text, cls) {
    if (status) {
      status.textContent = text;
      status.className = 'live-status ' + (cls || '');
    }
  }

  // Do not replace what the operator is using: a field with focus or an
  // edit, or a button between press and release (the click would be lost).
  var pending = null;
  var pressed = false;
  live.addEventListener('pointerdown', function () { pressed = true; });
  document.addEventListener('pointerup', function () {
    window.setTimeout(function () {
      pressed = false;
      if (pending !== null) {
        apply(pending);
      }
    }, 0);
  });
  function busy() {
    if (pressed) {
      return true;
    }
    var a = document.activeElement;
    if (a && live.contains(a) && /^(INPUT|SELECT|TEXTAREA)$/.test(a.tagName)) {
      return true;
    }
    var inputs = live.querySelectorAll('input:not([type=hidden])');
    for (var i = 0; i < inputs.length; i++) {
      if (inputs[i].value !== inputs[i].defaultValue) {
        return true;
      }
    }
    return false;
  }
  var shown = null;
  function apply(html) {
    if (busy()) {
      pending = html;
      return;
    }
    pending = null;
    if (html === shown) {
      return;
    }
    shown = html;
    live.innerHTML = html;
    live.dataset.updates = String(Number(live.dataset.updates || '0') + 1);
  }
  live.addEventListener('focusout', function () {
    window.setTimeout(function () {
      if (pending !== null) {
        apply(pending);
      }
    }, 0);
  });

  var es = new EventSource(live.dataset.events);
  es.addEventListener('update', function (e) {
    var d = JSON.parse(e.data);
    apply(d.html);
    setStatus('live', 'on');
  });
  es.addEventListener('expired', function () {
    es.close();
    setStatus('session ended', 'off');
    window.location.assign('/ui/login');
  });
  es.onerror = function () {
    setStatus(es.readyState === EventSource.CLOSED ? 'disconnected: reload' : 'reconnecting…', 'off');
  };
})();
