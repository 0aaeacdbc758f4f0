// #/login: paste a team token (or the admin token). It is checked against GET /v1/me before it
// is stored; a refused token says why, in words.

import { request, token } from '../api.js';
import { h, fill } from '../dom.js';

export function loginView(main, ctx) {
  const input = h('input', {
    id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false',
    required: true, 'aria-describedby': 'token-help',
  });
  const error = h('p', { id: 'login-error', class: 'error', role: 'alert', hidden: true });
  const submit = h('button', { type: 'submit' }, 'Log in');
  const form = h('form', { class: 'login', novalidate: true },
    h('label', { for: 'token' }, 'API token'),
    input,
    h('p', { id: 'token-help', class: 'muted' },
      'A team token from ', h('code', {}, 'pdistill token create --team NAME'),
      ', or the admin token. It is kept in this browser (localStorage) until you log out.'),
    submit,
    error);

  const showError = (text) => {
    fill(error, text);
    error.hidden = false;
    input.setAttribute('aria-invalid', 'true');
    input.focus();
  };

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (!value) {
      showError('Paste a token first.');
      return;
    }
    submit.disabled = true;
    error.hidden = true;
    try {
      const me = await request('v1/me', { withToken: value, signal: ctx.signal });
      token.set(value);
      ctx.loggedIn(me);
      ctx.go(ctx.next);
    } catch (err) {
      if (ctx.signal.aborted) return;
      if (err.status === 401) {
        showError(`This token was refused: ${err.detail}. Check that it was copied whole, or ask for a new one.`);
      } else {
        showError(`Could not check the token: ${err.message}`);
      }
    } finally {
      submit.disabled = false;
    }
  });

  document.title = 'Log in · pdistill';
  const notice = ctx.flash ? h('p', { class: 'notice', role: 'status' }, ctx.flash) : null;
  fill(main, h('h1', { tabindex: '-1' }, 'Log in'), notice, form);
  input.focus();
}
