// The character picker's data: GET api/characters (admin token). A server without the endpoint
// (404) has no picker; any other failure hides it too, since talking works without one.

const KEY = "voxgate.character";

/** The characters on offer, or null when the server offers none. */
export async function fetchCharacters(token) {
  let response;
  try {
    response = await fetch(new URL("api/characters", window.location.href), {
      headers: { Authorization: `Bearer ${token}` },
    });
  } catch {
    return null;
  }
  if (!response.ok) return null;
  const body = await response.json();
  const characters = Array.isArray(body.characters) ? body.characters : [];
  return characters.length > 0 ? characters : null;
}

export function chosenCharacter() {
  return sessionStorage.getItem(KEY);
}

export function chooseCharacter(id) {
  if (id) sessionStorage.setItem(KEY, id);
  else sessionStorage.removeItem(KEY);
}
