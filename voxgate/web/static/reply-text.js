// An interrupted reply, drawn as what the user heard (plain) followed by what they did not
// (struck through). Shared by the talk page and the admin transcript.

const word = (w) => w.toLowerCase().replace(/[^\p{L}\p{N}]+/gu, "");

/**
 * Where `text` stops being what was heard: the end of the longest run of its words, from the
 * start, that match `heard` word for word (case and punctuation aside). The server's heard_text
 * is whole sentences plus the words of the current one that played, so it is such a run.
 */
export function heardLength(text, heard) {
  const wanted = (heard || "").split(/\s+/).map(word).filter(Boolean);
  let end = 0;
  let matched = 0;
  for (const m of text.matchAll(/\S+/g)) {
    const w = word(m[0]);
    if (!w) {
      if (matched > 0) end = m.index + m[0].length; // punctuation standing alone
      continue;
    }
    if (matched >= wanted.length || w !== wanted[matched]) break;
    matched += 1;
    end = m.index + m[0].length;
  }
  return end;
}

/** Fill `container` with `text`, its heard part plain and the rest struck through. Its text stays
 * exactly `text`, so calling it again (a later, more exact heard_text) is safe. */
export function showInterrupted(container, text, heard) {
  const cut = heardLength(text, heard);
  const plain = document.createElement("span");
  plain.className = "heard";
  plain.textContent = text.slice(0, cut);
  const rest = document.createElement("s");
  rest.className = "unheard";
  rest.title = "not heard: the reply was cut off here";
  rest.textContent = text.slice(cut);
  container.replaceChildren(plain, rest);
}
