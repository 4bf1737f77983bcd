// caesar-appliance dashboard: uploads with per-file progress, live elapsed times, catalog row <-> viewer selection.
// Everything still reads without this file; it only adds what needs a script.
(function () {
  "use strict";
  const API = "/caesar/api/v1.0";

  function uploadFile(file, tag, list) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = file.name;
    const bar = document.createElement("progress");
    bar.max = file.size || 1;
    bar.value = 0;
    bar.setAttribute("aria-label", "upload of " + file.name);
    const state = document.createElement("span");
    state.textContent = "uploading…";
    item.append(name, bar, state);
    list.append(item);
    const failed = (reason) => {
      state.textContent = reason;
      state.className = "error";
      item.classList.add("failed");  // the bar turns red
    };
    return new Promise((resolve) => {
      const body = new FormData();
      body.append("file", file);
      if (tag) body.append("tag", tag);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", API + "/upload");
      xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) { bar.max = e.total; bar.value = e.loaded; } });
      xhr.addEventListener("load", () => {
        let reply = {};
        try { reply = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
        if (xhr.status === 200) {
          bar.value = bar.max;
          state.innerHTML = "";
          const link = document.createElement("a");
          link.href = "/files/" + reply.uuid;
          link.textContent = "ready: " + reply.metadata.shape[1] + " × " + reply.metadata.shape[0];
          state.append(link);
          if (reply.same_as) {
            const note = document.createElement("span");
            note.className = "same-as";
            note.textContent = " same as " + reply.same_as.filename_orig + ", uploaded " +
              new Date(reply.same_as.date).toLocaleString();
            state.append(note);
          }
          item.classList.add("done");
        } else {
          failed(reply.status || ("failed (" + xhr.status + ")"));
        }
        resolve();
      });
      xhr.addEventListener("error", () => { failed("the connection failed"); resolve(); });
      xhr.send(body);
    });
  }

  function setUpUploads() {
    const form = document.getElementById("upload-form");
    if (!form) return;
    const input = document.getElementById("file-input");
    const list = document.getElementById("uploads");
    const send = async (files) => {
      const tag = form.querySelector("[name=tag]").value;
      await Promise.all(Array.from(files).map((f) => uploadFile(f, tag, list)));
      const table = document.getElementById("files-table");
      if (table && window.htmx) window.htmx.trigger(table, "refresh");
    };
    form.addEventListener("submit", (e) => { e.preventDefault(); if (input.files.length) send(input.files); });
    input.addEventListener("change", () => { if (input.files.length) { send(input.files); input.value = ""; } });
    ["dragenter", "dragover"].forEach((t) => form.addEventListener(t, (e) => { e.preventDefault(); form.classList.add("over"); }));
    ["dragleave", "drop"].forEach((t) => form.addEventListener(t, (e) => { e.preventDefault(); form.classList.remove("over"); }));
    form.addEventListener("drop", (e) => { if (e.dataTransfer && e.dataTransfer.files.length) send(e.dataTransfer.files); });
  }

  function tickElapsed() {
    document.querySelectorAll("[data-started]").forEach((el) => {
      const started = Date.parse(el.dataset.started);
      if (!isNaN(started)) el.textContent = ((Date.now() - started) / 1000).toFixed(0);
    });
  }

  // selection shared by the catalog table and the sky viewer
  window.caesarSelect = function (componentId, fromViewer) {
    document.querySelectorAll("table.catalog tr.selected").forEach((r) => r.classList.remove("selected"));
    const row = document.querySelector('table.catalog tr[data-component="' + componentId + '"]');
    if (row) { row.classList.add("selected"); if (fromViewer) row.scrollIntoView({block: "nearest"}); }
    if (!fromViewer && window.caesarViewer) window.caesarViewer.select(componentId);
  };

  function onRowActivate(e) {
    const row = e.target.closest("table.catalog tr[data-component]");
    if (!row) return;
    if (e.type === "keydown" && e.key !== "Enter" && e.key !== " ") return;
    if (e.type === "keydown") e.preventDefault();
    window.caesarSelect(row.dataset.component, false);
  }

  function keepLogAtBottom(e) {
    const log = document.getElementById("job-log");
    if (log && e.target === log) log.scrollTop = log.scrollHeight;
  }

  document.addEventListener("DOMContentLoaded", () => {
    setUpUploads();
    const log = document.getElementById("job-log");
    if (log) log.scrollTop = log.scrollHeight;
    setInterval(tickElapsed, 1000);
  });
  document.addEventListener("click", onRowActivate);
  document.addEventListener("keydown", onRowActivate);
  document.addEventListener("htmx:afterSwap", keepLogAtBottom);
})();
