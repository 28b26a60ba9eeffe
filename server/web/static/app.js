// Keyboard shortcuts for the review pages; plain JS, no library (pages work without it).
(function () {
  "use strict";

  // Keys typed into a text field are text, not shortcuts; radios and buttons pass them on.
  var NOT_TEXT = { radio: true, checkbox: true, button: true, submit: true };

  function typing(target) {
    var tag = target && target.tagName;
    if (tag === "INPUT") { return !NOT_TEXT[target.type]; }
    return tag === "TEXTAREA" || tag === "SELECT" || Boolean(target && target.isContentEditable);
  }

  function follow(id) {
    var link = document.getElementById(id);
    if (link) { window.location.href = link.href; }
  }

  function queueKeys() {
    var rows = Array.prototype.slice.call(document.querySelectorAll("#queue tbody tr"));
    if (!rows.length) { return; }
    var current = 0;
    function select(i) {
      rows[current].classList.remove("selected");
      current = Math.max(0, Math.min(rows.length - 1, i));
      rows[current].classList.add("selected");
      rows[current].scrollIntoView({ block: "nearest" });
    }
    select(0);
    rows.forEach(function (row, i) {
      row.addEventListener("click", function (ev) {
        if (ev.target.tagName !== "A") { window.location.href = row.dataset.href; }
      });
      row.addEventListener("mouseenter", function () { select(i); });
    });
    document.addEventListener("keydown", function (ev) {
      if (typing(ev.target) || ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
      // Keys on the filter form, a button or a link keep their own meaning.
      if (ev.target.closest && ev.target.closest("form, a, button")) { return; }
      if (ev.key === "j" || ev.key === "ArrowDown") { select(current + 1); ev.preventDefault(); }
      else if (ev.key === "k" || ev.key === "ArrowUp") { select(current - 1); ev.preventDefault(); }
      else if (ev.key === "Enter" || ev.key === "o") { window.location.href = rows[current].dataset.href; ev.preventDefault(); }
    });
  }

  function eventKeys() {
    var form = document.getElementById("decision-form");
    if (!form) { return; }
    function submit(go) {
      if (!form.querySelector("input[name=outcome]:checked")) {
        form.querySelector("input[name=outcome]").focus();
        form.reportValidity();
        return;
      }
      var button = document.getElementById(go === "next" ? "save-next" : "save");
      form.requestSubmit(button);
    }
    document.addEventListener("keydown", function (ev) {
      if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
      if (ev.key === "Enter" && ev.target.id === "comment" && !ev.shiftKey) { return; }
      if (ev.key === "Enter" && !typing(ev.target) && ev.target.tagName !== "BUTTON" && ev.target.tagName !== "A") {
        submit(ev.shiftKey ? "stay" : "next");
        ev.preventDefault();
        return;
      }
      if (typing(ev.target)) { return; }
      var radio = form.querySelector("input[data-key='" + ev.key + "']");
      if (radio) { radio.checked = true; radio.focus(); ev.preventDefault(); return; }
      if (ev.key === "j" || ev.key === "n") { follow("next"); }
      else if (ev.key === "k" || ev.key === "p") { follow("prev"); }
      else if (ev.key === "u") { follow("back"); }
      else if (ev.key === "c") { document.getElementById("comment").focus(); ev.preventDefault(); }
      else if (ev.key === "r") { document.getElementById("reviewed-form").submit(); }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    queueKeys();
    eventKeys();
  });
})();
