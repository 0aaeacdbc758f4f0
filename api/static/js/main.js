// The dashboard's shell: hash routes, the header (who is logged in, log out), and the life of
// each view. A view is a function (main, ctx) that fills <main>; ctx.signal aborts when the
// reader leaves it, which stops its timers, streams and requests.

import { onUnauthorized, request, token } from './api.js';
import { h, fill } from './dom.js';
import { campaignView } from './views/campaign.js';
import { campaignsView } from './views/campaigns.js';
import { clusterView } from './views/cluster.js';
import { loginView } from './views/login.js';

const ROUTES = [
  { pattern: /^\/login$/, view: loginView, section: null, open: true },
  { pattern: /^\/campaigns$/, view: campaignsView, section: 'campaigns' },
  { pattern: /^\/campaigns\/([^/]+)$/, view: campaignView, section: 'campaigns' },
  { pattern: /^\/cluster$/, view: clusterView, section: 'cluster' },
];

const main = document.getElementById('main');
let current = null; // AbortController of the view on screen
let flash = null; // a message for the next login page (why the reader is there)
let wanted = null; // the page the reader asked for before the login page took over

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/campaigns';
  const [path, query = ''] = raw.split('?');
  return { path, query: new URLSearchParams(query) };
}

export function go(path) {
  if (location.hash === `#${path}`) route(); // same hash: no hashchange event
  else location.hash = `#${path}`;
}

function showWho(me) {
  const who = document.getElementById('who');
  const name = document.getElementById('who-name');
  if (!me) {
    who.hidden = true;
    name.textContent = '';
    return;
  }
  name.textContent = me.admin ? 'admin' : `team ${me.team}`;
  who.hidden = false;
}

function markSection(section) {
  for (const link of document.querySelectorAll('nav a[data-section]')) {
    if (link.dataset.section === section) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

let me = null;

async function whoAmI() {
  if (me) return me;
  me = await request('v1/me');
  showWho(me);
  return me;
}

function here() {
  return location.hash.replace(/^#/, '') || '/campaigns';
}

function logout(message, { back = false } = {}) {
  token.clear();
  me = null;
  showWho(null);
  flash = message;
  wanted = back && parseHash().path !== '/login' ? here() : null;
  go('/login');
}

async function route() {
  current?.abort();
  current = new AbortController();
  const { path, query } = parseHash();
  const found = ROUTES.find((r) => r.pattern.test(path));
  if (!found) {
    go('/campaigns');
    return;
  }
  if (!found.open && !token.get()) {
    flash = flash || 'Log in with a team token to see its campaigns.';
    wanted = here(); // e.g. the campaign page a link (or `pdistill demo`) pointed at
    go('/login');
    return;
  }
  markSection(found.section);
  const params = path.match(found.pattern).slice(1).map(decodeURIComponent);
  const ctx = {
    signal: current.signal,
    params,
    query,
    go,
    me: null,
    flash: flash,
    loggedIn: (info) => { me = info; showWho(info); },
    next: wanted || '/campaigns', // where the login page sends the reader
  };
  if (path !== '/login') wanted = null;
  flash = null;
  if (!found.open) {
    try {
      ctx.me = await whoAmI();
    } catch (err) {
      if (err.status === 401) return; // onUnauthorized already sent the reader to the login page
      ctx.me = { team: null, admin: false }; // the API is down: the view says so itself
    }
  }
  if (ctx.signal.aborted) return;
  fill(main);
  found.view(main, ctx);
  if (!main.contains(document.activeElement)) main.querySelector('h1')?.focus({ preventScroll: true });
}

onUnauthorized((err) => {
  logout(`The API refused the stored token: ${err.detail}. Log in again.`, { back: true });
});

document.getElementById('logout').addEventListener('click', () => logout('Logged out.'));
window.addEventListener('hashchange', route);
if (!document.querySelector('main h1')) fill(main, h('p', { class: 'muted' }, 'Loading…'));
route();
