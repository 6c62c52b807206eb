// The Lab: a page per path, drawn from the public REST API (/api/v1) and the CDN URLs.
// No build step and no framework: DOM built with h(), never from HTML strings.

const KEY_NAME = "banatie.apiKey";
const RATIOS = ["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"];
const TEMPLATES = [
  "general", "photorealistic", "illustration", "minimalist", "sticker", "product", "comic",
];
const FORMATS = ["auto", "webp", "avif", "jpeg", "png"];
const FITS = ["cover", "contain", "fill", "inside"];
const PAGE_SIZE = 24;
const THUMB = 240; // CSS pixels; srcset offers 1x and 2x of it
const POLL_MS = 700;

const main = document.getElementById("main");
const statusLine = document.getElementById("status");
const errorLine = document.getElementById("error");
let uid = 0;

// -- DOM ------------------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "text") el.textContent = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// A labelled control: a <label for> beside the input, wrapped in a .field.
function field(labelText, control, wide = false) {
  control.id ||= `f${++uid}`;
  return h("div", { class: wide ? "field wide" : "field" },
    h("label", { for: control.id, text: labelText }), control);
}

function select(name, values, chosen, blank = null) {
  const el = h("select", { name });
  if (blank !== null) el.append(h("option", { value: "", text: blank }));
  for (const v of values) el.append(h("option", { value: v, selected: v === chosen, text: v }));
  return el;
}

// A read-only text with a Copy button (both labelled).
function copyable(labelText, value, multiline = false) {
  const box = multiline
    ? h("textarea", { readonly: true, rows: 3 })
    : h("input", { type: "text", readonly: true });
  box.value = value;
  box.id = `f${++uid}`;
  const button = h("button", {
    type: "button", class: "quiet", "aria-label": `Copy ${labelText}`,
    onclick: async () => {
      box.select();
      try {
        await navigator.clipboard.writeText(box.value);
        say(`Copied ${labelText}.`);
      } catch {
        say(`Selected ${labelText}: press Ctrl+C to copy.`);
      }
    },
  }, "Copy");
  return h("div", { class: "field wide" },
    h("label", { for: box.id, text: labelText }), h("div", { class: "copy" }, box, button));
}

function say(message) {
  statusLine.textContent = message;
}

function showError(error) {
  errorLine.hidden = false;
  errorLine.textContent = error instanceof ApiProblem || error instanceof Error
    ? error.message : String(error);
}

function clearError() {
  errorLine.hidden = true;
  errorLine.textContent = "";
}

// -- the key ---------------------------------------------------------------------------------

function storedKey() {
  return sessionStorage.getItem(KEY_NAME) || localStorage.getItem(KEY_NAME) || "";
}

function setupKeyForm() {
  const form = document.getElementById("key-form");
  const input = document.getElementById("api-key");
  const remember = document.getElementById("remember");
  remember.checked = Boolean(localStorage.getItem(KEY_NAME));
  input.value = storedKey();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = input.value.trim();
    sessionStorage.removeItem(KEY_NAME);
    localStorage.removeItem(KEY_NAME);
    if (key) (remember.checked ? localStorage : sessionStorage).setItem(KEY_NAME, key);
    route();
  });
  document.getElementById("forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_NAME);
    localStorage.removeItem(KEY_NAME);
    input.value = "";
    remember.checked = false;
    route();
  });
}

// -- the API ---------------------------------------------------------------------------------

class ApiProblem extends Error {
  constructor(status, code, message) {
    super(`${message} (${code}, HTTP ${status})`);
    this.status = status;
    this.code = code;
  }
}

// Same origin only: the key is sent to this server and nowhere else (CSP connect-src 'self').
async function api(method, path, { json, form, headers = {} } = {}) {
  const init = { method, headers: { "X-API-Key": storedKey(), ...headers } };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  }
  let response;
  try {
    response = await fetch(`/api/v1${path}`, init);
  } catch (error) {
    throw new ApiProblem(0, "NETWORK_ERROR", `The server could not be reached: ${error.message}`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    throw new ApiProblem(response.status, "BAD_RESPONSE", "The server answered without JSON");
  }
  if (!body.success) {
    const e = body.error || {};
    throw new ApiProblem(response.status, e.code || "ERROR", e.message || "Request failed");
  }
  return body;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v != null) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

// -- CDN URLs --------------------------------------------------------------------------------

function variant(image, params) {
  return image.storageUrl + query(params);
}

function thumbnail(image) {
  const params = { w: THUMB, h: THUMB, fit: "cover", format: "auto" };
  return h("img", {
    src: variant(image, params),
    srcset: `${variant(image, params)} 1x, ${variant(image, { ...params, dpr: 2 })} 2x`,
    alt: image.alias ? `Image ${image.alias}` : `Image ${image.id.slice(0, 8)}`,
    width: THUMB, height: THUMB, loading: "lazy", decoding: "async",
  });
}

// For the copy-able snippets: text inside a double-quoted HTML attribute.
function attr(text) {
  return String(text).replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;");
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

// -- gallery ---------------------------------------------------------------------------------

async function galleryPage() {
  const params = new URLSearchParams(location.search);
  const filters = {
    source: params.get("source") || "",
    flowId: params.get("flowId") || "",
    alias: params.get("alias") || "",
  };
  const source = select("source", ["generated", "uploaded"], filters.source, "All");
  const flow = h("input", { name: "flowId", type: "text", placeholder: "flow id", size: 36 });
  flow.value = filters.flowId;
  const alias = h("input", { name: "alias", type: "text", placeholder: "@alias" });
  alias.value = filters.alias;
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter images" },
    field("Source", source), field("Flow", flow), field("Alias", alias),
    h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const q = query({ source: source.value, flowId: flow.value.trim(), alias: alias.value.trim() });
    history.pushState(null, "", `/lab${q}`);
    route();
  });
  const grid = h("ul", { class: "grid", "aria-label": "Images, newest first" });
  const more = h("button", { type: "button", hidden: true }, "Load more");
  const count = h("p", { class: "empty" });
  main.replaceChildren(h("h1", { text: "Gallery" }), form, count, grid, more);

  let offset = 0;
  async function load() {
    more.disabled = true;
    say("Loading images…");
    const page = await api("GET", `/images${query({ ...filters, limit: PAGE_SIZE, offset })}`);
    for (const image of page.data) {
      grid.append(h("li", {},
        h("a", { href: `/lab/images/${image.id}`, "data-image-id": image.id },
          thumbnail(image),
          h("span", { class: "caption" },
            h("span", { text: image.alias || "" }), h("span", { class: "tag", text: image.source })))));
    }
    offset += page.data.length;
    const total = page.pagination.total;
    count.textContent = total ? `${total} image${total === 1 ? "" : "s"}` : "No images yet.";
    more.hidden = !page.pagination.hasMore;
    more.disabled = false;
    say(`Showing ${offset} of ${total}.`);
  }
  more.addEventListener("click", () => load().catch(showError));
  await load();
}

// -- image detail ----------------------------------------------------------------------------

async function detailPage(ref) {
  say("Loading the image…");
  let image = (await api("GET", `/images/${encodeURIComponent(ref)}`)).data;
  let generation = null;
  if (image.generationId) {
    try {
      generation = (await api("GET", `/generations/${image.generationId}`)).data;
    } catch (error) {
      if (!(error instanceof ApiProblem && error.status === 404)) throw error;
    }
  }

  // A flow id may have no flow row yet (minted lazily by an upload or generation), and a GET of
  // it would be a 404 (a console error): look for it among the newest 100 flows instead.
  let flow = null;
  if (image.flowId) {
    flow = (await api("GET", `/flows${query({ limit: 100 })}`)).data
      .find((f) => f.id === image.flowId) || null;
  }

  // The focal point picker: a click on the picture sets focalPoint; crops follow at once.
  const big = { w: 800, format: "auto" };
  const picture = h("img", {
    src: variant(image, big),
    srcset: `${variant(image, big)} 1x, ${variant(image, { ...big, dpr: 2 })} 2x`,
    alt: image.alias ? `Image ${image.alias}` : "The image",
    width: image.width, height: image.height,
  });
  const marker = h("span", { class: "marker", hidden: true });
  const picker = h("div", {
    class: "picker", tabindex: 0, role: "button",
    "aria-label": "Focal point: click the image, or use the arrow keys and Enter",
  }, picture, marker);
  const focalText = h("span");
  const crops = h("div", { class: "crops", "aria-label": "Crops around the focal point" });
  const CROPS = [["1:1", 120, 120], ["16:9", 160, 90], ["9:16", 90, 160]];

  function drawFocal() {
    const fp = image.focalPoint;
    marker.hidden = !fp;
    if (fp) {
      marker.style.left = `${fp.x * 100}%`;
      marker.style.top = `${fp.y * 100}%`;
    }
    focalText.textContent = fp ? `x ${fp.x.toFixed(2)}, y ${fp.y.toFixed(2)}` : "centre (not set)";
    // Crop URLs are immutable in the browser's cache: `fp` (ignored by the CDN) makes a new
    // URL per focal point so the browser asks again; the CDN re-crops on its own.
    const tag = fp ? `${fp.x.toFixed(3)},${fp.y.toFixed(3)}` : "none";
    crops.replaceChildren(...CROPS.map(([name, w, hh]) => h("figure", {},
      h("img", {
        src: variant(image, { w, h: hh, fit: "cover", format: "auto", fp: tag }),
        alt: `Crop ${name}`, width: w, height: hh, "data-crop": name,
      }),
      h("figcaption", { text: name }))));
  }

  let keyboardFocal = image.focalPoint ? { ...image.focalPoint } : { x: 0.5, y: 0.5 };
  async function setFocal(x, y) {
    const fp = { x: Math.round(x * 1000) / 1000, y: Math.round(y * 1000) / 1000 };
    try {
      image = (await api("PUT", `/images/${image.id}`, { json: { focalPoint: fp } })).data;
      keyboardFocal = { ...image.focalPoint };
      clearError();
      say("Focal point saved.");
      drawFocal();
    } catch (error) {
      showError(error);
    }
  }
  picker.addEventListener("click", (event) => {
    const box = picture.getBoundingClientRect();
    const x = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
    const y = Math.min(1, Math.max(0, (event.clientY - box.top) / box.height));
    setFocal(x, y);
  });
  picker.addEventListener("keydown", (event) => {
    const step = 0.05;
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step],
      ArrowDown: [0, step] };
    if (moves[event.key]) {
      event.preventDefault();
      const [dx, dy] = moves[event.key];
      keyboardFocal.x = Math.min(1, Math.max(0, keyboardFocal.x + dx));
      keyboardFocal.y = Math.min(1, Math.max(0, keyboardFocal.y + dy));
      marker.hidden = false;
      marker.style.left = `${keyboardFocal.x * 100}%`;
      marker.style.top = `${keyboardFocal.y * 100}%`;
    } else if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      setFocal(keyboardFocal.x, keyboardFocal.y);
    }
  });

  // Project alias: assign (moves it from any other image), clear.
  const aliasInput = h("input", { type: "text", name: "alias", placeholder: "@hero" });
  aliasInput.value = image.alias || "";
  const aliasNow = h("span");
  async function saveAlias(alias) {
    try {
      image = (await api("PUT", `/images/${image.id}/alias`, { json: { alias } })).data;
      aliasInput.value = image.alias || "";
      drawAlias();
      clearError();
      say(alias ? `Alias ${alias} now names this image.` : "Alias cleared.");
    } catch (error) {
      showError(error);
    }
  }
  const aliasForm = h("form", { class: "fields", "aria-label": "Alias of this image" },
    field("Project alias", aliasInput),
    h("button", { type: "submit" }, "Save alias"),
    h("button", { type: "button", class: "quiet", onclick: () => saveAlias(null) }, "Clear alias"));
  aliasForm.addEventListener("submit", (event) => {
    event.preventDefault();
    saveAlias(aliasInput.value.trim() || null);
  });

  // Variant builder: the CDN URL for a width, format and fit, with snippets and a preview.
  const vw = h("input", { type: "number", min: 1, max: 4096, value: 400, name: "w" });
  const vh = h("input", { type: "number", min: 1, max: 4096, name: "h", placeholder: "auto" });
  const vformat = select("format", FORMATS, "auto");
  const vfit = select("fit", FITS, "cover");
  const variantOut = h("div");
  function drawVariant() {
    const params = { w: vw.value, h: vh.value, fit: vh.value ? vfit.value : "",
      format: vformat.value };
    const url = variant(image, params);
    const url2 = variant(image, { ...params, w: vw.value ? vw.value * 2 : "",
      h: vh.value ? vh.value * 2 : "" });
    const alt = image.alias || "image";
    variantOut.replaceChildren(
      copyable("CDN URL", url),
      copyable("<img> tag", `<img src="${attr(url)}" alt="${attr(alt)}">`, true),
      copyable("srcset", `srcset="${attr(url)} 1x, ${attr(url2)} 2x"`, true),
      h("div", { class: "preview" }, h("img", { src: url, alt: "Variant preview" })));
  }
  for (const control of [vw, vh, vformat, vfit]) control.addEventListener("change", drawVariant);

  // Flow aliases: names inside the image's flow that point here; assign one more.
  const flowAliases = h("ul", { class: "aliases", "aria-label": "Flow aliases of this image" });
  function drawFlowAliases() {
    const mine = Object.entries(flow.aliases).filter(([, id]) => id === image.id);
    flowAliases.replaceChildren(...(mine.length
      ? mine.map(([alias]) => h("li", {}, h("code", { text: alias })))
      : [h("li", { class: "empty", text: "None in this flow." })]));
  }
  const flowAliasInput = h("input", { type: "text", name: "flowAlias", placeholder: "@latest" });
  const flowAliasForm = flow
    ? h("form", { class: "fields", "aria-label": "Flow alias of this image" },
      field("Flow alias", flowAliasInput), h("button", { type: "submit" }, "Assign flow alias"))
    : null;
  flowAliasForm?.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError();
    const alias = flowAliasInput.value.trim();
    try {
      flow = (await api("PUT", `/flows/${flow.id}/aliases`, {
        json: { aliases: { [alias]: image.id } } })).data;
      drawFlowAliases();
      say(`Flow alias ${alias} now names this image.`);
    } catch (error) {
      showError(error);
    }
  });
  const flowPanel = flow
    ? h("section", { class: "panel", "aria-labelledby": "flow-h" },
      h("h2", { id: "flow-h" }, "Flow ", h("a", { href: `/lab/flows/${flow.id}` },
        shortId(flow.id))),
      flowAliases, flowAliasForm)
    : null;

  const deleteButton = h("button", {
    type: "button", class: "danger",
    onclick: async () => {
      if (!confirm("Delete this image? Its URLs stop working.")) return;
      try {
        await api("DELETE", `/images/${image.id}`);
        location.assign("/lab");
      } catch (error) {
        showError(error);
      }
    },
  }, "Delete image");

  const metaList = h("dl", { class: "meta" });
  function drawAlias() {
    aliasNow.textContent = image.alias || "none";
  }
  const rows = [
    ["Id", image.id], ["Source", image.source], ["Alias", aliasNow],
    ["Size", `${image.width} × ${image.height}`], ["Type", image.mimeType],
    ["Bytes", image.fileSize.toLocaleString()], ["Flow", flow
      ? h("a", { href: `/lab/flows/${flow.id}` }, shortId(flow.id)) : image.flowId || "—"],
    ["Focal point", focalText], ["Created", when(image.createdAt)],
  ];
  for (const [k, v] of rows) metaList.append(h("dt", { text: k }), h("dd", {}, v));

  const generationPanel = generation
    ? h("section", { class: "panel", "aria-labelledby": "gen-h" },
      h("h2", { id: "gen-h", text: "Generation" }),
      h("dl", { class: "meta" },
        h("dt", { text: "Prompt" }), h("dd", { text: generation.prompt }),
        h("dt", { text: "Original prompt" }), h("dd", { text: generation.originalPrompt }),
        h("dt", { text: "Template" }),
        h("dd", { text: (generation.enhancementOptions || {}).template || "—" }),
        h("dt", { text: "Aspect ratio" }), h("dd", { text: generation.aspectRatio }),
        h("dt", { text: "Status" }), h("dd", { text: generation.status }),
        h("dt", { text: "Time taken" }),
        h("dd", { text: generation.processingTimeMs != null
          ? `${generation.processingTimeMs} ms` : "—" }),
        h("dt", { text: "Created" }), h("dd", { text: when(generation.createdAt) })))
    : null;

  main.replaceChildren(
    h("p", {}, h("a", { href: "/lab" }, "← Gallery")),
    h("h1", { text: image.alias ? `Image ${image.alias}` : "Image" }),
    h("div", { class: "detail" },
      h("div", {},
        picker,
        h("section", { class: "panel", "aria-labelledby": "crop-h" },
          h("h2", { id: "crop-h", text: "Crops" }),
          h("p", { class: "tag", text: "Click the image to move the focal point." }), crops),
        h("section", { class: "panel", "aria-labelledby": "var-h" },
          h("h2", { id: "var-h", text: "Variant" }),
          h("div", { class: "fields" }, field("Width", vw), field("Height", vh),
            field("Format", vformat), field("Fit", vfit)),
          variantOut)),
      h("div", {},
        h("section", { class: "panel", "aria-labelledby": "meta-h" },
          h("h2", { id: "meta-h", text: "Details" }), metaList),
        h("section", { class: "panel" }, aliasForm),
        flowPanel,
        generationPanel,
        h("section", { class: "panel" }, deleteButton))));
  drawAlias();
  if (flow) drawFlowAliases();
  drawFocal();
  drawVariant();
  say("");
}

// -- generate --------------------------------------------------------------------------------

async function generatePage() {
  const [flows, recent] = await Promise.all([
    api("GET", `/flows${query({ limit: 100 })}`),
    api("GET", `/images${query({ limit: 12 })}`),
  ]);
  const prompt = h("textarea", { name: "prompt", required: true, maxlength: 5000 });
  const ratio = select("aspectRatio", RATIOS, "1:1");
  const template = select("template", TEMPLATES, "general");
  const enhance = h("input", { type: "checkbox", name: "autoEnhance", checked: true });
  const alias = h("input", { type: "text", name: "alias", placeholder: "@hero" });
  // Flow: a new one (the API's default) or one of the project's flows.
  const chosenFlow = new URLSearchParams(location.search).get("flowId") || "";
  const flow = h("select", { name: "flowId" }, h("option", { value: "", text: "A new flow" }));
  for (const f of flows.data) {
    flow.append(h("option", { value: f.id, selected: f.id === chosenFlow,
      text: `Flow ${shortId(f.id)} (${f.generationCount} gen., ${f.imageCount} img.)` }));
  }
  const refs = h("input", { type: "text", name: "referenceImages", placeholder: "@a, @b" });
  // Reference images picked from the gallery: a checkbox per recent image, its thumbnail as label.
  const picks = recent.data.map((image) => {
    const name = `Reference ${image.alias || shortId(image.id)}`;
    const box = h("input", { type: "checkbox", value: image.id, id: `f${++uid}`, "aria-label": name });
    return h("li", {}, box, h("label", { for: box.id },
      h("img", { src: variant(image, { w: 96, h: 96, fit: "cover", format: "auto" }),
        srcset: `${variant(image, { w: 96, h: 96, fit: "cover", format: "auto", dpr: 2 })} 2x`,
        alt: name, width: 96, height: 96 })));
  });
  const picker = recent.data.length
    ? h("fieldset", { class: "refs" }, h("legend", { text: "Pick references from the gallery" }),
      h("ul", {}, picks))
    : null;
  const submit = h("button", { type: "submit" }, "Generate");
  const result = h("div", { class: "result", "aria-live": "polite" });
  enhance.id = `f${++uid}`;
  const form = h("form", { "aria-label": "Generate an image" },
    h("div", { class: "fields" },
      field("Prompt", prompt, true), field("Aspect ratio", ratio), field("Template", template),
      h("div", { class: "field" }, h("span", { class: "check" }, enhance,
        h("label", { for: enhance.id, text: "Auto-enhance the prompt" }))),
      field("Alias", alias), field("Flow", flow), field("Reference images", refs)),
    picker,
    h("p", { class: "actions" }, submit));

  async function follow(generation) {
    const done = await followGeneration(generation, (g) => {
      result.replaceChildren(h("p", { "data-status": g.status }, `Status: ${g.status}…`));
    });
    drawResult(done);
  }

  function drawResult(generation) {
    const again = (action) => async () => {
      clearError();
      try {
        const answer = await api("POST", `/generations/${generation.id}/${action}`, {
          headers: { Prefer: "respond-async" },
        });
        await follow(answer.data);
      } catch (error) {
        showError(error);
      }
    };
    if (generation.status === "failed") {
      result.replaceChildren(
        h("p", { "data-status": "failed" }, `Failed: ${generation.errorMessage || "unknown error"}`),
        h("button", { type: "button", onclick: again("retry") }, "Retry"));
      return;
    }
    const image = generation.outputImage;
    result.replaceChildren(
      h("p", { "data-status": generation.status },
        `Status: ${generation.status}`,
        generation.processingTimeMs != null ? ` in ${generation.processingTimeMs} ms` : ""),
      h("p", { class: "tag", text: `Prompt sent: ${generation.prompt}` }),
      image ? h("a", { href: `/lab/images/${image.id}` },
        h("img", { src: variant(image, { w: 512, format: "auto" }),
          alt: `Result: ${generation.originalPrompt}`, id: "result-image" })) : null,
      h("p", {}, h("button", { type: "button", onclick: again("regenerate") }, "Regenerate")));
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError();
    const body = {
      prompt: prompt.value,
      aspectRatio: ratio.value,
      autoEnhance: enhance.checked,
      enhancementOptions: { template: template.value },
    };
    if (alias.value.trim()) body.alias = alias.value.trim();
    if (flow.value.trim()) body.flowId = flow.value.trim();
    const references = refs.value.split(",").map((s) => s.trim()).filter(Boolean);
    for (const box of form.querySelectorAll(".refs input:checked")) references.push(box.value);
    if (references.length) body.referenceImages = references;
    submit.disabled = true;
    try {
      const answer = await api("POST", "/generations", {
        json: body, headers: { Prefer: "respond-async" },
      });
      await follow(answer.data);
    } catch (error) {
      showError(error);
      result.replaceChildren();
    } finally {
      submit.disabled = false;
    }
  });
  main.replaceChildren(h("h1", { text: "Generate" }), form, result);
}

// -- live URL builder ------------------------------------------------------------------------

async function livePage() {
  // The project's CDN base (PUBLIC_URL/cdn/org/project) is read from any image's storageUrl.
  const sample = (await api("GET", "/images?limit=1")).data[0];
  const base = sample ? sample.storageUrl.replace(/\/img\/[^/]+$/, "") : "";
  const signing = (await api("GET", "/live/signing")).data;
  const cdn = h("input", { type: "text", name: "base", size: 48,
    placeholder: `${location.origin}/cdn/{org}/{project}` });
  cdn.value = base;
  const scope = h("input", { type: "text", name: "scope", value: "demo", pattern: "[A-Za-z0-9_\\-]{1,64}" });
  const prompt = h("textarea", { name: "prompt", required: true });
  const ratio = select("aspectRatio", RATIOS, "1:1");
  const template = select("template", TEMPLATES, "general");
  const w = h("input", { type: "number", name: "w", min: 1, max: 4096, value: 512 });
  const lh = h("input", { type: "number", name: "h", min: 1, max: 4096, placeholder: "auto" });
  const fit = select("fit", FITS, "cover");
  const format = select("format", FORMATS, "auto");
  const expiry = select("expires", ["never", "3600", "86400", "604800"], "3600");
  const out = h("div", { class: "result" });
  const form = h("form", { "aria-label": "Build a live URL" },
    h("div", { class: "fields" },
      field("CDN base", cdn, true), field("Scope", scope), field("Prompt", prompt, true),
      field("Aspect ratio", ratio), field("Template", template), field("Width", w),
      field("Height", lh), field("Fit", fit), field("Format", format),
      signing.requireSignedUrls ? field("Signature expires after (seconds)", expiry) : null),
    h("p", { class: "actions" }, h("button", { type: "submit" }, "Build URL")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError();
    const params = { prompt: prompt.value.trim(), aspectRatio: ratio.value,
      template: template.value, w: w.value, h: lh.value, fit: lh.value ? fit.value : "",
      format: format.value };
    let url = `${cdn.value.replace(/\/$/, "")}/live/${encodeURIComponent(scope.value)}`
      + query(params);
    try {
      if (signing.requireSignedUrls) {
        const body = { path: url };
        if (expiry.value !== "never") body.expiresInSeconds = Number(expiry.value);
        const signed = (await api("POST", "/live/sign", { json: body })).data;
        url = signed.url || url;
      }
    } catch (error) {
      showError(error);
      return;
    }
    const url2 = url.replace(/([?&])([wh])=(\d+)/g, (m, sep, k, n) => `${sep}${k}=${n * 2}`);
    const img = h("img", { src: url, alt: params.prompt, id: "live-image" });
    img.addEventListener("load", () => say(`Loaded: ${img.naturalWidth} × ${img.naturalHeight}.`));
    img.addEventListener("error", () => showError("The live URL did not load an image."));
    say("Loading the live image (the first request generates it)…");
    out.replaceChildren(
      copyable("Live URL", url),
      copyable("<img> tag", `<img src="${attr(url)}" alt="${attr(params.prompt)}">`, true),
      copyable("srcset", `srcset="${attr(url)} 1x, ${attr(url2)} 2x"`, true),
      h("div", { class: "preview" }, img));
  });
  main.replaceChildren(h("h1", { text: "Live URL" }),
    h("p", { class: "tag" }, signing.requireSignedUrls
      ? "This project requires signed live URLs: the URL below is signed."
      : "Live URLs are public: the first request generates, every later one is a cache hit."),
    form, out);
  say("");
}

// -- upload ----------------------------------------------------------------------------------

function uploadPage() {
  const file = h("input", { type: "file", name: "file", accept: "image/png,image/jpeg,image/webp" });
  const alias = h("input", { type: "text", name: "alias", placeholder: "@logo" });
  const flow = h("input", { type: "text", name: "flowId", placeholder: "new flow", size: 36 });
  const submit = h("button", { type: "submit" }, "Upload image");
  const result = h("div", { class: "result" });
  const drop = h("div", { class: "drop" }, field("Upload", file),
    h("p", { class: "tag", text: "or drop a PNG, JPEG or WebP file here" }));
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length) file.files = event.dataTransfer.files;
  });
  const form = h("form", { "aria-label": "Upload an image" }, drop,
    h("div", { class: "fields" }, field("Alias", alias), field("Flow id", flow), submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError();
    if (!file.files.length) {
      showError("Choose a file to upload first.");
      return;
    }
    const data = new FormData();
    data.append("file", file.files[0]);
    if (alias.value.trim()) data.append("alias", alias.value.trim());
    if (flow.value.trim()) data.append("flowId", flow.value.trim());
    submit.disabled = true;
    try {
      const image = (await api("POST", "/images/upload", { form: data })).data;
      say("Uploaded.");
      result.replaceChildren(
        h("p", {}, "Stored as ", h("a", { href: `/lab/images/${image.id}` }, image.alias || image.id)),
        h("img", { src: variant(image, { w: 400, format: "auto" }), alt: "The uploaded image" }));
    } catch (error) {
      showError(error);
    } finally {
      submit.disabled = false;
    }
  });
  main.replaceChildren(h("h1", { text: "Upload" }), form, result);
}

// -- live scopes and signing -----------------------------------------------------------------

async function scopesPage() {
  const scopes = (await api("GET", "/live/scopes?limit=100")).data;
  let signing = (await api("GET", "/live/signing")).data;
  const list = h("ul", { class: "scopes", "aria-label": "Live scopes" });
  for (const scope of scopes) {
    const allow = h("input", { type: "checkbox", checked: scope.allowNewGenerations });
    allow.id = `f${++uid}`;
    const limit = h("input", { type: "number", min: 0, value: scope.newGenerationsLimit });
    const used = h("progress", { max: Math.max(1, scope.newGenerationsLimit),
      value: Math.min(scope.currentGenerations, scope.newGenerationsLimit) });
    used.id = `f${++uid}`;
    const usage = h("span", { text: `${scope.currentGenerations} / ${scope.newGenerationsLimit}` });
    const form = h("form", { class: "fields", "aria-label": `Scope ${scope.slug}` },
      h("div", { class: "field" }, h("label", { for: used.id, text: `${scope.slug}: generations` }),
        h("span", {}, used, " ", usage)),
      field(`Limit of ${scope.slug}`, limit),
      h("div", { class: "field" }, h("span", { class: "check" }, allow,
        h("label", { for: allow.id, text: "Allow new generations" }))),
      h("button", { type: "submit" }, `Save ${scope.slug}`));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearError();
      try {
        const saved = (await api("PUT", `/live/scopes/${encodeURIComponent(scope.slug)}`, {
          json: { allowNewGenerations: allow.checked, newGenerationsLimit: Number(limit.value) },
        })).data;
        used.max = Math.max(1, saved.newGenerationsLimit);
        used.value = Math.min(saved.currentGenerations, saved.newGenerationsLimit);
        usage.textContent = `${saved.currentGenerations} / ${saved.newGenerationsLimit}`;
        say(`Scope ${saved.slug} saved.`);
      } catch (error) {
        showError(error);
      }
    });
    list.append(h("li", { class: "panel" }, form));
  }

  const required = h("input", { type: "checkbox", checked: signing.requireSignedUrls });
  required.id = `f${++uid}`;
  const secretOut = h("div");
  const secretCount = h("p", { class: "tag", text: `Secrets: ${signing.secrets.length}` });
  required.addEventListener("change", async () => {
    clearError();
    try {
      signing = (await api("PUT", "/live/signing", {
        json: { requireSignedUrls: required.checked } })).data;
      say(signing.requireSignedUrls ? "Signed live URLs are now required."
        : "Live URLs no longer need a signature.");
    } catch (error) {
      required.checked = !required.checked;
      showError(error);
    }
  });
  const rotate = h("button", {
    type: "button",
    onclick: async () => {
      clearError();
      try {
        const answer = (await api("POST", "/live/signing/rotate")).data;
        secretOut.replaceChildren(copyable("New signing secret (shown once)", answer.secret));
        secretCount.textContent = `Secrets: ${answer.secrets.length}`;
        say("Secret rotated: the previous one still verifies until the next rotation.");
      } catch (error) {
        showError(error);
      }
    },
  }, "Rotate secret");

  main.replaceChildren(
    h("h1", { text: "Live scopes" }),
    scopes.length ? list : h("p", { class: "empty", text: "No live scopes yet: a live URL makes one." }),
    h("h2", { text: "Signed live URLs" }),
    h("section", { class: "panel" },
      h("p", {}, h("span", { class: "check" }, required,
        h("label", { for: required.id, text: "Require signed live URLs" }))),
      secretCount, rotate, secretOut));
}

// -- flows -----------------------------------------------------------------------------------

// Prefer: respond-async answers at once with a pending generation; poll until it ends.
async function followGeneration(generation, onStatus) {
  while (generation.status === "pending" || generation.status === "processing") {
    onStatus(generation);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    generation = (await api("GET", `/generations/${generation.id}`)).data;
  }
  return generation;
}

function shortId(id) {
  return id.slice(0, 8);
}

async function flowsPage() {
  const answer = await api("GET", `/flows${query({ limit: 100 })}`);
  const rows = answer.data.map((flow) => h("tr", { "data-flow-id": flow.id },
    h("td", {}, h("a", { href: `/lab/flows/${flow.id}` }, `Flow ${shortId(flow.id)}`)),
    h("td", { text: flow.generationCount }),
    h("td", { text: flow.imageCount }),
    h("td", { text: Object.keys(flow.aliases).join(", ") || "—" }),
    h("td", { text: when(flow.updatedAt) })));
  const table = h("table", { class: "flows" },
    h("caption", { text: `${answer.pagination.total} flow${answer.pagination.total === 1 ? "" : "s"}` }),
    h("thead", {}, h("tr", {}, ["Flow", "Generations", "Images", "Aliases", "Updated"]
      .map((name) => h("th", { scope: "col", text: name })))),
    h("tbody", {}, rows));
  const create = h("button", {
    type: "button",
    onclick: async () => {
      clearError();
      try {
        const flow = (await api("POST", "/flows", { json: {} })).data;
        history.pushState(null, "", `/lab/flows/${flow.id}`);
        route();
      } catch (error) {
        showError(error);
      }
    },
  }, "New flow");
  main.replaceChildren(h("h1", { text: "Flows" }),
    h("p", { class: "tag", text: "A flow groups generations and uploads; its aliases name "
      + "images inside it. Generating or uploading without a flow id starts a new one." }),
    answer.data.length ? h("div", { class: "table" }, table)
      : h("p", { class: "empty", text: "No flows yet." }),
    h("p", { class: "actions" }, create));
  say("");
}

async function flowPage(id) {
  say("Loading the flow…");
  let flow = (await api("GET", `/flows/${encodeURIComponent(id)}`)).data;
  const [images, generations] = await Promise.all([
    api("GET", `/flows/${flow.id}/images${query({ limit: 100 })}`),
    api("GET", `/flows/${flow.id}/generations${query({ limit: 100 })}`),
  ]);
  const byId = new Map(images.data.map((image) => [image.id, image]));
  const counts = h("p", { class: "tag", "data-counts": true });
  const aliasList = h("ul", { class: "aliases", "aria-label": "Flow aliases" });
  function drawFlow() {
    counts.textContent = `${flow.generationCount} generation${flow.generationCount === 1 ? "" : "s"}`
      + `, ${flow.imageCount} image${flow.imageCount === 1 ? "" : "s"}`;
    const entries = Object.entries(flow.aliases);
    aliasList.replaceChildren(...entries.map(([alias, imageId]) => h("li", {},
      h("code", { text: alias }), " → ",
      h("a", { href: `/lab/images/${imageId}` }, byId.get(imageId)?.alias || shortId(imageId)), " ",
      h("button", { type: "button", class: "quiet", "aria-label": `Remove flow alias ${alias}`,
        onclick: async () => {
          clearError();
          try {
            flow = (await api("DELETE",
              `/flows/${flow.id}/aliases/${encodeURIComponent(alias)}`)).data;
            drawFlow();
            say(`Flow alias ${alias} removed.`);
          } catch (error) {
            showError(error);
          }
        } }, "Remove"))));
    if (!entries.length) aliasList.append(h("li", { class: "empty", text: "No flow aliases." }));
  }

  const aliasName = h("input", { type: "text", name: "alias", placeholder: "@latest", required: true });
  const aliasImage = select("imageId", [], null);
  for (const image of images.data) {
    aliasImage.append(h("option", { value: image.id,
      text: `${image.alias || shortId(image.id)} (${image.source})` }));
  }
  const aliasForm = h("form", { class: "fields", "aria-label": "Assign a flow alias" },
    field("Flow alias", aliasName), field("Image", aliasImage),
    h("button", { type: "submit", disabled: !images.data.length }, "Assign flow alias"));
  aliasForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError();
    const alias = aliasName.value.trim();
    try {
      flow = (await api("PUT", `/flows/${flow.id}/aliases`, {
        json: { aliases: { [alias]: aliasImage.value } } })).data;
      drawFlow();
      say(`Flow alias ${alias} assigned.`);
    } catch (error) {
      showError(error);
    }
  });

  const grid = h("ul", { class: "grid", "aria-label": "Images of this flow, newest first" },
    images.data.map((image) => h("li", {},
      h("a", { href: `/lab/images/${image.id}`, "data-image-id": image.id }, thumbnail(image),
        h("span", { class: "caption" }, h("span", { text: image.alias || "" }),
          h("span", { class: "tag", text: image.source }))))));
  const genRows = generations.data.map((g) => h("tr", { "data-generation-id": g.id },
    h("td", { text: when(g.createdAt) }),
    h("td", { text: g.status }),
    h("td", { text: g.originalPrompt }),
    h("td", { text: g.processingTimeMs != null ? `${g.processingTimeMs} ms` : "—" }),
    h("td", {}, g.outputImage
      ? h("a", { href: `/lab/images/${g.outputImage.id}` }, shortId(g.outputImage.id)) : "—")));
  const genTable = h("table", { class: "flows" },
    h("caption", { text: "Generations, newest first" }),
    h("thead", {}, h("tr", {}, ["Created", "Status", "Prompt", "Time", "Image"]
      .map((name) => h("th", { scope: "col", text: name })))),
    h("tbody", {}, genRows));

  const progress = h("p", { "aria-live": "polite" });
  const regenerate = h("button", {
    type: "button", disabled: !generations.data.length,
    onclick: async () => {
      clearError();
      regenerate.disabled = true;
      try {
        const started = (await api("POST", `/flows/${flow.id}/regenerate`, {
          headers: { Prefer: "respond-async" } })).data;
        const done = await followGeneration(started,
          (g) => { progress.textContent = `Regenerating: ${g.status}…`; });
        if (done.status === "failed") {
          progress.textContent = "";
          showError(`Regeneration failed: ${done.errorMessage || "unknown error"}`);
          regenerate.disabled = false;
          return;
        }
        await flowPage(flow.id);
        say("Regenerated: a new image for the flow's newest generation.");
      } catch (error) {
        showError(error);
        regenerate.disabled = false;
      }
    },
  }, "Regenerate");

  const deleteButton = h("button", {
    type: "button", class: "danger",
    onclick: async () => {
      if (!confirm("Delete this flow? Its images and generations stay.")) return;
      try {
        await api("DELETE", `/flows/${flow.id}`);
        history.pushState(null, "", "/lab/flows");
        route();
      } catch (error) {
        showError(error);
      }
    },
  }, "Delete flow");

  main.replaceChildren(
    h("p", {}, h("a", { href: "/lab/flows" }, "← Flows")),
    h("h1", { text: `Flow ${shortId(flow.id)}` }),
    counts,
    h("p", {}, h("a", { href: `/lab${query({ flowId: flow.id })}` }, "Show in the gallery"), " · ",
      h("a", { href: `/lab/generate${query({ flowId: flow.id })}` }, "Generate in this flow")),
    h("section", { class: "panel", "aria-labelledby": "regen-h" },
      h("h2", { id: "regen-h", text: "Regenerate" }),
      h("p", { class: "tag", text: "A new image from the flow's newest generation; aliases "
        + "that named the old image move to the new one." }),
      regenerate, progress),
    h("section", { class: "panel", "aria-labelledby": "falias-h" },
      h("h2", { id: "falias-h", text: "Flow aliases" }), aliasList, aliasForm),
    h("h2", { text: "Images" }),
    images.data.length ? grid : h("p", { class: "empty", text: "No images in this flow." }),
    h("h2", { text: "Generations" }),
    generations.data.length ? h("div", { class: "table" }, genTable)
      : h("p", { class: "empty", text: "No generations in this flow." }),
    h("section", { class: "panel" }, deleteButton));
  drawFlow();
  say("");
}

// -- routing ---------------------------------------------------------------------------------

function pageOf(path) {
  const rest = path.replace(/^\/lab\/?/, "");
  if (rest === "") return ["gallery", null];
  if (rest.startsWith("images/")) return ["detail", decodeURIComponent(rest.slice(7))];
  if (rest.startsWith("flows/")) return ["flow", decodeURIComponent(rest.slice(6))];
  return [rest, null];
}

async function route() {
  clearError();
  say("");
  const [page, ref] = pageOf(location.pathname);
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === (page === "flow" ? "flows" : page)) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!storedKey()) {
    main.replaceChildren(h("h1", { text: "Welcome to the Lab" }),
      h("p", {}, "Type your project's API key above (", h("code", { text: "banatie keys create" }),
        " prints one). It stays in this browser and is sent only to this server."));
    document.getElementById("api-key").focus();
    return;
  }
  try {
    if (page === "gallery") await galleryPage();
    else if (page === "detail") await detailPage(ref);
    else if (page === "generate") await generatePage();
    else if (page === "live") await livePage();
    else if (page === "upload") uploadPage();
    else if (page === "scopes") await scopesPage();
    else if (page === "flows") await flowsPage();
    else if (page === "flow") await flowPage(ref);
    else main.replaceChildren(h("h1", { text: "No such page" }));
  } catch (error) {
    say("");
    showError(error);
    if (error instanceof ApiProblem && error.status === 401) {
      main.replaceChildren(h("p", {}, "The API key was not accepted: check it and try again."));
    }
  }
}

setupKeyForm();
window.addEventListener("popstate", route);
route();
