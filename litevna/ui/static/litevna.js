// LiteVNA web UI: copy buttons and confirmations on every page, the study browser and
// the frame viewer. One file, no build step. Every DICOMweb request goes to the store's
// own routes and is authorised by the litevna-token cookie ("Create token"), never by
// the session.
"use strict";

(function () {
  const body = document.body;

  // DICOM JSON (PS3.18 F.2): {"ggggeeee": {"vr": …, "Value": […]}}.
  const TAG = {
    StudyInstanceUID: "0020000D", SeriesInstanceUID: "0020000E", SOPInstanceUID: "00080018",
    PatientName: "00100010", PatientID: "00100020", StudyDate: "00080020",
    StudyDescription: "00081030", AccessionNumber: "00080050",
    ModalitiesInStudy: "00080061", NumberOfStudyRelatedSeries: "00201206",
    NumberOfStudyRelatedInstances: "00201208", Modality: "00080060", SeriesNumber: "00200011",
    SeriesDescription: "0008103E", NumberOfSeriesRelatedInstances: "00201209",
    InstanceNumber: "00200013", NumberOfFrames: "00280008",
  };

  function values(item, tag) {
    const element = item[tag];
    return element && Array.isArray(element.Value) ? element.Value : [];
  }

  function first(item, tag) {
    return values(item, tag)[0];
  }

  function personName(item, tag) {
    const name = first(item, tag);
    const text = name && typeof name === "object" ? name.Alphabetic || "" : String(name || "");
    const [family, ...rest] = text.split("^");
    const given = rest.filter(Boolean).join(" ");
    return given ? `${family}, ${given}` : family;
  }

  function dicomDate(text) {
    return /^\d{8}$/.test(text || "") ? `${text.slice(0, 4)}-${text.slice(4, 6)}-${text.slice(6)}` : text || "";
  }

  function element(name, attributes, ...children) {
    const node = document.createElement(name);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function thumbnail(src, size) {
    const image = element("img", { class: "thumb", src, alt: "", loading: "lazy", width: size, height: size });
    image.addEventListener("error", () => image.classList.add("missing"), { once: true });
    return image;
  }

  class NeedToken extends Error {}

  // A QIDO-RS search: {items, more} (more: the server's Warning says results were cut).
  async function qido(path, params) {
    const url = new URL(`/${body.dataset.label}/dicomweb${path}`, location.origin);
    for (const [name, value] of params) url.searchParams.append(name, value);
    const response = await fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "application/dicom+json" },
    });
    if (response.status === 401 || response.status === 403) throw new NeedToken();
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try {
        message = (await response.json()).error || message;
      } catch (ignored) { /* not a JSON error body */ }
      throw new Error(message);
    }
    const items = response.status === 204 ? [] : await response.json();
    return { items, more: response.headers.has("Warning") };
  }

  // Every page: copy buttons and confirmations before destructive posts.
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-copy]");
    if (!button) return;
    const source = document.getElementById(button.dataset.copy);
    const text = source.textContent.trim();
    try {
      await navigator.clipboard.writeText(text);
    } catch (notAllowed) {
      // Plain-HTTP pages on another host have no clipboard API: select for Ctrl+C.
      const range = document.createRange();
      range.selectNodeContents(source);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      document.execCommand("copy");
    }
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 1500);
  });

  document.addEventListener("submit", (event) => {
    const message = event.target.dataset.confirm;
    if (message && !window.confirm(message)) event.preventDefault();
  });

  function studyBrowser() {
    const label = body.dataset.label;
    const base = `/${label}/dicomweb`;
    const limit = 50;
    const form = document.getElementById("study-search");
    const list = document.getElementById("studies");
    const status = document.getElementById("status");
    const needToken = document.getElementById("need-token");
    const pager = document.getElementById("pager");
    const previous = document.getElementById("previous");
    const next = document.getElementById("next");
    const range = document.getElementById("range");
    const query = new URLSearchParams(location.search);
    let offset = Math.max(0, parseInt(query.get("offset"), 10) || 0);
    form.elements.PatientName.value = query.get("PatientName") || "";
    form.elements.PatientID.value = query.get("PatientID") || "";

    function filters() {
      const chosen = [];
      const name = form.elements.PatientName.value.trim();
      const id = form.elements.PatientID.value.trim();
      // A name without wildcards is a prefix: what people type into a search box.
      if (name) chosen.push(["PatientName", /[*?]/.test(name) ? name : `${name}*`]);
      if (id) chosen.push(["PatientID", id]);
      return chosen;
    }

    function remember() {
      const state = new URLSearchParams();
      const name = form.elements.PatientName.value.trim();
      const id = form.elements.PatientID.value.trim();
      if (name) state.set("PatientName", name);
      if (id) state.set("PatientID", id);
      if (offset) state.set("offset", offset);
      const text = state.toString();
      history.replaceState(null, "", text ? `?${text}` : location.pathname);
    }

    function studyItem(study) {
      const uid = first(study, TAG.StudyInstanceUID);
      const count = first(study, TAG.NumberOfStudyRelatedInstances);
      const modalities = values(study, TAG.ModalitiesInStudy);
      const details = [first(study, TAG.PatientID), dicomDate(first(study, TAG.StudyDate))]
        .filter(Boolean).join(" · ");
      const head = element("button", { type: "button", class: "study-head", "aria-expanded": "false" },
        thumbnail(`${base}/studies/${uid}/thumbnail`, 72),
        element("span", { class: "study-main" },
          element("strong", { class: "patient-name", text: personName(study, TAG.PatientName) || "(no name)" }),
          element("span", { class: "muted", text: details }),
          element("span", { class: "description", text: first(study, TAG.StudyDescription) || "" })),
        element("span", { class: "study-meta" },
          ...modalities.map((modality) => element("span", { class: "badge", text: modality })),
          element("span", { text: count === undefined ? "" : `${count} instance${count === 1 ? "" : "s"}` })));
      const seriesList = element("div", { class: "series-list" });
      seriesList.hidden = true;
      const item = element("li", { class: "study", "data-study": uid }, head, seriesList);
      head.addEventListener("click", () => toggleSeries(uid, head, seriesList));
      return item;
    }

    async function toggleSeries(uid, head, seriesList) {
      const open = head.getAttribute("aria-expanded") !== "true";
      head.setAttribute("aria-expanded", String(open));
      seriesList.hidden = !open;
      if (!open || seriesList.dataset.loaded) return;
      seriesList.dataset.loaded = "yes";
      seriesList.replaceChildren(element("p", { class: "muted", text: "Loading series…" }));
      try {
        const { items } = await qido(`/studies/${uid}/series`, [
          ["includefield", `${TAG.SeriesDescription},${TAG.NumberOfSeriesRelatedInstances}`],
          ["limit", "1000"]]);
        items.sort((a, b) => (first(a, TAG.SeriesNumber) ?? 1e9) - (first(b, TAG.SeriesNumber) ?? 1e9));
        seriesList.replaceChildren(...items.map((series) => seriesItem(uid, series)));
        if (!items.length) seriesList.replaceChildren(element("p", { class: "muted", text: "No series." }));
      } catch (error) {
        delete seriesList.dataset.loaded;
        seriesList.replaceChildren(element("p", { class: "alert error", text: failure(error) }));
      }
    }

    function seriesItem(study, series) {
      const uid = first(series, TAG.SeriesInstanceUID);
      const number = first(series, TAG.SeriesNumber);
      const count = first(series, TAG.NumberOfSeriesRelatedInstances);
      const title = [number === undefined ? null : `#${number}`, first(series, TAG.Modality)]
        .filter(Boolean).join(" ");
      const viewer = `/ui/stores/${label}/viewer?${new URLSearchParams({ study, series: uid })}`;
      return element("div", { class: "series", "data-series": uid },
        thumbnail(`${base}/studies/${study}/series/${uid}/thumbnail`, 56),
        element("div", { class: "series-info" },
          element("strong", { text: title || "Series" }), " ",
          element("span", { text: first(series, TAG.SeriesDescription) || "" }), " ",
          element("span", { class: "muted", text: count === undefined ? "" : `· ${count} instance${count === 1 ? "" : "s"}` })),
        element("a", { class: "button small primary", href: viewer, text: "Open viewer" }));
    }

    function failure(error) {
      return error instanceof NeedToken ? "No valid token for this store." : `Search failed: ${error.message}`;
    }

    async function search() {
      remember();
      status.textContent = "Searching…";
      try {
        const { items, more } = await qido("/studies", [
          ...filters(), ["limit", String(limit)], ["offset", String(offset)],
          ["includefield", [TAG.StudyDescription, TAG.ModalitiesInStudy,
            TAG.NumberOfStudyRelatedSeries, TAG.NumberOfStudyRelatedInstances].join(",")]]);
        needToken.hidden = true;
        list.replaceChildren(...items.map(studyItem));
        status.textContent = items.length ? "" : (offset ? "No more studies." : "No study matches.");
        pager.hidden = !(offset || more);
        previous.disabled = offset === 0;
        next.disabled = !more;
        range.textContent = items.length ? `${offset + 1}–${offset + items.length}` : "";
      } catch (error) {
        list.replaceChildren();
        pager.hidden = true;
        needToken.hidden = !(error instanceof NeedToken);
        status.textContent = error instanceof NeedToken ? "" : failure(error);
      }
    }

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      offset = 0;
      search();
    });
    form.addEventListener("reset", () => {
      offset = 0;
      setTimeout(search); // after the browser has cleared the fields
    });
    // The pager sits below the list: show the new page from its top.
    previous.addEventListener("click", () => {
      offset = Math.max(0, offset - limit);
      search().then(() => window.scrollTo(0, 0));
    });
    next.addEventListener("click", () => {
      offset += limit;
      search().then(() => window.scrollTo(0, 0));
    });
    search();
  }

  function frameViewer() {
    const { label, study, series } = body.dataset;
    const base = `/${label}/dicomweb/studies/${study}/series/${series}`;
    const image = document.getElementById("frame");
    const stage = document.getElementById("stage");
    const slider = document.getElementById("slider");
    const counter = document.getElementById("counter");
    const message = document.getElementById("stage-message");
    const needToken = document.getElementById("need-token");
    const presets = document.querySelectorAll("[data-window]");
    // One entry per frame of every instance, in InstanceNumber order.
    let frames = [];
    let wanted = 0;
    let windowing = "";
    let loading = false;

    function source(index) {
      const { sop, frame } = frames[index];
      return `${base}/instances/${sop}/frames/${frame}/rendered${windowing ? `?window=${windowing}` : ""}`;
    }

    // One image request at a time; while it loads only the last frame asked for waits.
    function show(index) {
      if (!frames.length) return;
      wanted = Math.min(frames.length - 1, Math.max(0, index));
      slider.value = String(wanted + 1);
      describe(wanted);
      if (!loading) load();
    }

    function load() {
      loading = true;
      const index = wanted;
      const src = source(index);
      image.dataset.pending = String(index + 1);
      image.onload = () => {
        loading = false;
        image.dataset.frame = String(index + 1);
        message.textContent = "";
        if (wanted !== index || source(wanted) !== src) load();
        else if (index + 1 < frames.length) new Image().src = source(index + 1); // ahead of scrolling
      };
      image.onerror = () => {
        loading = false;
        message.textContent = `Frame ${index + 1} could not be rendered.`;
        if (wanted !== index || source(wanted) !== src) load();
      };
      image.src = src;
    }

    function describe(index) {
      const { instanceNumber, frame, of } = frames[index];
      const where = [instanceNumber === undefined ? null : `instance ${instanceNumber}`,
        of > 1 ? `frame ${frame}/${of}` : null].filter(Boolean).join(", ");
      counter.textContent = `Frame ${index + 1} / ${frames.length}${where ? ` (${where})` : ""}`;
    }

    async function instances() {
      const found = [];
      for (let offset = 0; ; offset += 1000) {
        const { items, more } = await qido(`/studies/${study}/series/${series}/instances`, [
          ["includefield", `${TAG.InstanceNumber},${TAG.NumberOfFrames}`],
          ["limit", "1000"], ["offset", String(offset)]]);
        found.push(...items);
        if (!more || !items.length) return found;
      }
    }

    async function start() {
      try {
        const items = await instances();
        const number = (item) => first(item, TAG.InstanceNumber);
        items.sort((a, b) => (number(a) ?? Infinity) - (number(b) ?? Infinity));
        frames = items.flatMap((item) => {
          const of = Number(first(item, TAG.NumberOfFrames) ?? 1);
          const sop = first(item, TAG.SOPInstanceUID);
          return Array.from({ length: of }, (_, i) => ({ sop, frame: i + 1, of, instanceNumber: number(item) }));
        });
      } catch (error) {
        needToken.hidden = !(error instanceof NeedToken);
        message.textContent = error instanceof NeedToken ? "No valid token for this store." : error.message;
        return;
      }
      if (!frames.length) {
        message.textContent = "This series has no images.";
        return;
      }
      slider.max = String(frames.length);
      slider.disabled = frames.length < 2;
      show(0);
      stage.focus();
    }

    slider.addEventListener("input", () => show(Number(slider.value) - 1));

    let wheel = 0;
    stage.addEventListener("wheel", (event) => {
      event.preventDefault();
      // Lines or pixels: one frame per notch of a mouse wheel, smooth on a touchpad.
      wheel += event.deltaMode === 1 ? event.deltaY * 40 : event.deltaY;
      const steps = Math.trunc(wheel / 40);
      if (steps) {
        wheel -= steps * 40;
        show(wanted + steps);
      }
    }, { passive: false });

    // Dragging up or down on the image scrolls too (a finger on a phone): 12 px a frame.
    let drag = null;
    stage.addEventListener("pointerdown", (event) => {
      drag = { y: event.clientY, from: wanted };
      stage.setPointerCapture(event.pointerId);
    });
    stage.addEventListener("pointermove", (event) => {
      if (drag) show(drag.from + Math.trunc((event.clientY - drag.y) / 12));
    });
    for (const end of ["pointerup", "pointercancel"]) stage.addEventListener(end, () => { drag = null; });

    const KEYS = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10 };
    document.addEventListener("keydown", (event) => {
      if (event.target.closest("input, select, textarea") && event.target !== slider) return;
      if (event.key in KEYS) show(wanted + KEYS[event.key]);
      else if (event.key === "Home") show(0);
      else if (event.key === "End") show(frames.length - 1);
      else return;
      event.preventDefault();
    });

    for (const button of presets) {
      button.addEventListener("click", () => {
        windowing = button.dataset.window;
        for (const other of presets) other.setAttribute("aria-pressed", String(other === button));
        show(wanted);
      });
    }
    start();
  }

  if (body.dataset.page === "studies") studyBrowser();
  if (body.dataset.page === "viewer") frameViewer();
})();
