// The admin token: `voxgate serve` prints http://HOST:PORT/#token=TOKEN. A fragment never reaches
// the server or Referer headers; the page moves it into sessionStorage (this tab only) and
// clears it from the address bar, so it is not bookmarked or shared by accident.

const KEY = "voxgate.token";

export function takeToken(location = window.location) {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const given = fragment.get("token");
  if (given) {
    sessionStorage.setItem(KEY, given);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(KEY);
}

export function saveToken(token) {
  sessionStorage.setItem(KEY, token);
}

export function forgetToken() {
  sessionStorage.removeItem(KEY);
}
