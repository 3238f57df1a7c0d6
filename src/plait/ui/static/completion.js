// Completion as you type in a text box (a combobox with a listbox under it, as ARIA's
// pattern): ↓ ↑ choose, Enter or a click takes the choice, Escape closes the list.
import { fill, h, uniqueId } from "./core.js";

const MAX = 8;

/** Completes ``box`` (an input or textarea): ``suggest(before)`` gets the text before the
 *  caret and answers {from, items: [{label, text}]}: the text from index ``from`` to the
 *  caret is replaced by the chosen item's ``text``. Returns the list's element (to place
 *  after the box); ``onTake`` runs after a choice is written. */
export function completion(box, suggest, onTake) {
  const id = uniqueId("completion");
  const list = h("ul", { id, role: "listbox", class: "completion", "aria-label": "Completions", hidden: true });
  box.setAttribute("role", "combobox");
  box.setAttribute("aria-autocomplete", "list");
  box.setAttribute("aria-controls", id);
  box.setAttribute("aria-expanded", "false");
  let found = { from: 0, items: [] }, active = 0;

  function close() {
    list.hidden = true;
    box.setAttribute("aria-expanded", "false");
    box.removeAttribute("aria-activedescendant");
  }
  function draw() {
    if (!found.items.length) return close();
    fill(list, found.items.map((item, i) => h("li", {
      id: `${id}-${i}`, role: "option", "aria-selected": i === active ? "true" : "false",
      onmousedown: (e) => { e.preventDefault(); take(i); },  // the box keeps the focus
    }, item.label)));
    list.hidden = false;
    box.setAttribute("aria-expanded", "true");
    box.setAttribute("aria-activedescendant", `${id}-${active}`);
  }
  function look() {
    const caret = box.selectionStart;
    found = box.selectionEnd === caret ? suggest(box.value.slice(0, caret)) : { from: 0, items: [] };
    found.items = found.items.slice(0, MAX);
    active = 0;
    draw();
  }
  function take(i) {
    const caret = box.selectionStart, text = found.items[i].text;
    box.value = box.value.slice(0, found.from) + text + box.value.slice(caret);
    box.selectionStart = box.selectionEnd = found.from + text.length;
    close();
    onTake?.();
  }
  box.addEventListener("input", look);
  box.addEventListener("blur", close);
  box.addEventListener("keydown", (e) => {
    if (list.hidden) return;
    const n = found.items.length;
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      active = (active + (e.key === "ArrowDown" ? 1 : n - 1)) % n;
      draw();
    } else if (e.key === "Enter") {
      e.preventDefault();
      take(active);
    } else if (e.key === "Escape") {
      e.preventDefault();
      close();
    }
  });
  return list;
}
