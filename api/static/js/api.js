// The dashboard's client of the /v1 API: the token, requests with the bearer header, errors.
//
// Paths are resolved against the page's own URL, so the dashboard also works when a proxy
// serves the API under a prefix (https://host/pdistill/).

const TOKEN_KEY = 'pdistill.token';

export const token = {
  get: () => localStorage.getItem(TOKEN_KEY),
  set: (value) => localStorage.setItem(TOKEN_KEY, value),
  clear: () => localStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(status, detail) {
    super(status ? `${detail} (HTTP ${status})` : detail);
    this.status = status;
    this.detail = detail;
  }
}

/** The text of an error body: {"detail": "..."} or a 422's {"message": ...} / detail list. */
function describe(body, fallback) {
  if (body && typeof body.detail === 'string') return body.detail;
  if (body && typeof body.message === 'string') return body.message;
  if (body && Array.isArray(body.detail)) {
    return body.detail.map((e) => `${(e.loc || []).join('.')}: ${e.msg}`).join('; ');
  }
  return fallback;
}

let unauthorized = () => {};
/** Called with the ApiError whenever the stored token is refused (401). */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

export function url(path) {
  return new URL(String(path).replace(/^\//, ''), document.baseURI).href;
}

/**
 * A request to the API; resolves to the parsed JSON (or the Response itself with raw: true).
 * `withToken` tries a token that is not stored yet (the login form): its 401 is only thrown.
 */
export async function request(path, { method = 'GET', signal, raw = false, withToken, accept } = {}) {
  const bearer = withToken ?? token.get();
  const headers = { Accept: accept || 'application/json' };
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  let response;
  try {
    response = await fetch(url(path), { method, headers, signal, cache: 'no-store' });
  } catch (err) {
    if (signal?.aborted) throw err;
    throw new ApiError(0, `cannot reach the API (${err.message || err})`);
  }
  if (!response.ok) {
    let detail = response.statusText || 'request failed';
    try {
      detail = describe(await response.json(), detail);
    } catch {
      // not JSON: keep the status text
    }
    const error = new ApiError(response.status, detail);
    if (response.status === 401 && withToken === undefined) unauthorized(error);
    throw error;
  }
  return raw ? response : response.json();
}

/** An image the API serves behind the token, as a blob: URL (an <img> cannot send headers). */
export async function imageUrl(path, signal) {
  const response = await request(path, { signal, raw: true, accept: 'image/*' });
  return URL.createObjectURL(await response.blob());
}

/** Save a file the API serves behind the token (a plain link cannot send the header). */
export async function download(path, signal) {
  const response = await request(path, { signal, raw: true, accept: 'application/octet-stream' });
  const named = /filename="([^"]+)"/.exec(response.headers.get('Content-Disposition') || '');
  const href = URL.createObjectURL(await response.blob());
  const link = document.createElement('a');
  link.href = href;
  link.download = named ? named[1] : String(path).split('/').pop();
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(href), 60_000); // the browser has taken it by then
}

export function isAbort(err) {
  return err?.name === 'AbortError';
}
