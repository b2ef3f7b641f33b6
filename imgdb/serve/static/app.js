// Search by image from any page: drop a file anywhere, or paste an image or a URL.
// Without JavaScript the search page's form does the same.
(function () {
  "use strict";
  const hint = document.getElementById("drop-hint");
  const searchForm = document.getElementById("search-form");
  const form = searchForm || document.getElementById("drop-form");

  function submitFiles(files) {
    if (!form || !files || !files.length) return;
    const input = form.querySelector("input[type=file]");
    const transfer = new DataTransfer();
    transfer.items.add(files[0]);
    input.files = transfer.files;
    form.submit();
  }

  let depth = 0;
  window.addEventListener("dragenter", (e) => {
    if (!e.dataTransfer || !Array.from(e.dataTransfer.types).includes("Files")) return;
    depth += 1;
    hint.hidden = false;
  });
  window.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) hint.hidden = true;
  });
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    hint.hidden = true;
    submitFiles(e.dataTransfer && e.dataTransfer.files);
  });
  window.addEventListener("paste", (e) => {
    const target = e.target;
    if (target && (target.tagName === "TEXTAREA" || (target.tagName === "INPUT" && target.type === "text"))) return;
    const data = e.clipboardData;
    if (!data) return;
    if (data.files && data.files.length) {
      e.preventDefault();
      submitFiles(data.files);
      return;
    }
    const text = (data.getData("text") || "").trim();
    if (searchForm && /^https?:\/\//i.test(text)) {
      e.preventDefault();
      searchForm.querySelector("input[name=url]").value = text;
      searchForm.submit();
    }
  });
  if (searchForm) {
    searchForm.querySelector("input[type=file]").addEventListener("change", (e) => {
      if (e.target.files.length) searchForm.submit();
    });
  }
})();
