// Images: pick a workflow, size and count, follow the job with a progress bar, see the results in the gallery.
import { ImageService } from "@luna/contracts/luna/image/v1/image_service_pb.js";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { JobStatus, QueuePhase, type Image, type Job } from "@luna/contracts/luna/image/v1/image_pb.js";
import { ModelService } from "@luna/contracts/luna/models/v1/model_service_pb.js";
import { ModelStatus, type Workflow } from "@luna/contracts/luna/models/v1/models_pb.js";
import { client, errorMessage } from "./api.js";
import { aboutSeconds, count, formatCredits, h, randomId, replace } from "./dom.js";

/** Images shown in the gallery (the newest). */
const GALLERY_SIZE = 30;
const FINAL = new Set([JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED]);

export interface ImageViewDeps {
  /** Something changed the credits (a job held, charged or released them). */
  onCreditsChanged(): void;
}

function statusText(job: Job, percent: number): string {
  switch (job.status) {
    case JobStatus.QUEUED:
      // Its pool scaled to zero and is waking a GPU for it.
      if (job.queuePhase === QueuePhase.WAITING_FOR_GPU) {
        return `Waiting for a GPU — ${aboutSeconds(job.gpuReadyAt ? timestampMs(job.gpuReadyAt) - Date.now() : 0)}`;
      }
      return job.queuePosition > 0 ? `Queued — ${job.queuePosition} ahead` : "Queued — next up";
    case JobStatus.RUNNING:
      return `Generating… ${percent}%`;
    case JobStatus.SUCCEEDED:
      return `Done — ${count(job.images.length, "image")}, ${count(job.creditsCharged, "credit")}`;
    case JobStatus.FAILED:
      return `Failed: ${job.errorMessage || job.errorCode} (nothing charged)`;
    case JobStatus.CANCELLED:
      return "Cancelled (credits released)";
    default:
      return "Waiting…";
  }
}

export function imageView(deps: ImageViewDeps): { el: HTMLElement; refresh(): void } {
  const images = client(ImageService);
  const prompt = h("textarea", { id: "image-prompt", rows: 3, required: true, placeholder: "A lighthouse in a storm, oil painting" });
  const workflowSelect = h("select", { id: "workflow", "aria-label": "Workflow" });
  const sizeSelect = h("select", { id: "size", "aria-label": "Size" });
  const countSelect = h("select", { id: "count", "aria-label": "Images" });
  const negative = h("input", { id: "negative-prompt", placeholder: "Negative prompt: what to leave out", "aria-label": "Negative prompt" });
  const styleSelect = h("select", { id: "style", "aria-label": "Style" });
  const steps = h("input", { id: "steps", type: "number", inputmode: "numeric", "aria-label": "Steps" });
  const seed = h("input", { id: "seed", type: "number", min: 0, inputmode: "numeric", placeholder: "random", "aria-label": "Seed" });
  const more = h("details", { class: "image-options", id: "image-options" }, h("summary", {}, "More options"),
    h("div", { class: "row" },
      h("label", {}, h("span", { class: "muted" }, "Style"), styleSelect),
      h("label", {}, h("span", { class: "muted" }, "Steps"), steps),
      h("label", {}, h("span", { class: "muted" }, "Seed"), seed)),
    negative);
  const viewer = h("dialog", { class: "viewer", id: "viewer" });
  const generate = h("button", { type: "submit", class: "primary", id: "generate" }, "Generate");
  const cancel = h("button", { type: "button", class: "ghost", id: "cancel-job", hidden: true }, "Cancel");
  const price = h("span", { class: "price muted", id: "image-price", title: "Held when you submit; a failed job costs nothing" });
  const bar = h("div", { class: "bar-fill" });
  const status = h("span", { class: "job-status", id: "job-status" });
  const preview = h("img", { class: "preview", alt: "", hidden: true });
  const progress = h("div", { class: "progress", id: "progress", hidden: true },
    h("div", { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100 }, bar), status, preview);
  const gallery = h("div", { class: "gallery", id: "gallery" });
  let workflows: Workflow[] = [];
  let jobId: string | undefined;

  const fillOptions = () => {
    const w = workflows.find((x) => x.id === workflowSelect.value);
    const p = w?.parameters;
    replace(sizeSelect, ...(p?.sizes ?? []).map((s) => h("option", { value: `${s.width}x${s.height}` }, `${s.width} × ${s.height}`)));
    if (p?.defaultSize) sizeSelect.value = `${p.defaultSize.width}x${p.defaultSize.height}`;
    const max = Math.max(1, p?.maxImages ?? 1);
    replace(countSelect, ...Array.from({ length: max }, (_, i) => h("option", { value: i + 1 }, `${i + 1} image${i ? "s" : ""}`)));
    replace(styleSelect, h("option", { value: "" }, "Default style"), ...(p?.styles ?? []).map((st) => h("option", { value: st.id, title: st.description }, st.displayName || st.id)));
    styleSelect.value = p?.defaultStyleId ?? "";
    styleSelect.disabled = (p?.styles.length ?? 0) === 0;
    steps.min = String(p?.minSteps ?? 1);
    steps.max = String(p?.maxSteps ?? 1);
    steps.placeholder = String(p?.defaultSteps ?? "");
    steps.value = "";
    steps.disabled = !p || p.minSteps === p.maxSteps; // fixed for this workflow
    negative.disabled = !p?.negativePromptSupported;
    negative.placeholder = p?.negativePromptSupported ? "Negative prompt: what to leave out" : "This workflow takes no negative prompt";
    if (p?.maxPromptChars) prompt.maxLength = p.maxPromptChars;
    showPrice();
  };
  /** The price before submitting: per image times the count. */
  const showPrice = () => {
    const w = workflows.find((x) => x.id === workflowSelect.value);
    price.textContent = w ? `${count(w.pricePerImage * BigInt(countSelect.value || "1"), "credit")}` : "";
    generate.title = w ? `${count(w.pricePerImage, "credit")} per image` : "";
  };
  workflowSelect.addEventListener("change", fillOptions);
  countSelect.addEventListener("change", showPrice);

  void client(ModelService).listWorkflows({}).then((res) => {
    workflows = res.workflows;
    replace(workflowSelect, ...workflows.map((w) => h("option", { value: w.id, disabled: w.status === ModelStatus.OFFLINE },
      `${w.displayName || w.id} · ${formatCredits(w.pricePerImage)}/image`)));
    const first = workflows.find((w) => w.status === ModelStatus.AVAILABLE) ?? workflows[0];
    if (first) workflowSelect.value = first.id;
    fillOptions();
  }, (err: unknown) => {
    progress.hidden = false;
    progress.dataset.status = "error";
    status.textContent = `Workflows could not be loaded: ${errorMessage(err)}`;
  });

  const showProgress = (job: Job, percent: number) => {
    const pct = job.status === JobStatus.SUCCEEDED ? 100 : Math.max(0, Math.min(100, percent));
    progress.hidden = false;
    bar.style.width = `${pct}%`;
    bar.parentElement?.setAttribute("aria-valuenow", String(pct));
    status.textContent = statusText(job, pct);
    progress.dataset.status = JobStatus[job.status]?.toLowerCase() ?? "";
  };

  const loadGallery = async () => {
    try {
      const res = await images.listImages({ page: { pageSize: GALLERY_SIZE } });
      if (res.images.length === 0) return replace(gallery, h("p", { class: "muted empty" }, "Your images will appear here."));
      replace(gallery, ...res.images.map((img: Image) => galleryItem(img)));
    } catch (err) {
      replace(gallery, h("p", { class: "form-error" }, `The gallery could not be loaded: ${errorMessage(err)}`));
    }
  };

  /** A gallery tile: the image (opens full size), its prompt as the caption, download and delete. */
  const galleryItem = (img: Image): HTMLElement => {
    const open = h("button", { type: "button", class: "tile", title: "View full size", "data-action": "view" },
      h("img", { src: img.url, alt: img.prompt, loading: "lazy", width: img.width, height: img.height }));
    const download = h("a", { href: img.url, download: `luna-${img.id}.png`, class: "ghost small", "data-action": "download" }, "Download");
    const del = h("button", { type: "button", class: "ghost small", "data-action": "delete-image" }, "Delete");
    const figure = h("figure", { class: "shot", "data-id": img.id }, open,
      h("figcaption", {}, h("span", { class: "caption", title: img.prompt }, img.prompt), h("span", { class: "tools" }, download, del)));
    open.addEventListener("click", () => {
      replace(viewer,
        h("img", { src: img.url, alt: img.prompt, width: img.width, height: img.height }),
        h("p", {}, img.prompt, h("span", { class: "muted" }, ` · ${img.width} × ${img.height} · seed ${img.seed}`)),
        h("form", { method: "dialog" }, h("button", { class: "primary", id: "viewer-close" }, "Close")));
      viewer.showModal();
    });
    del.addEventListener("click", () => {
      if (!confirm("Delete this image? This cannot be undone.")) return;
      images.deleteImage({ imageId: img.id }).then(() => {
        figure.remove();
        if (!gallery.querySelector(".shot")) replace(gallery, h("p", { class: "muted empty" }, "Your images will appear here."));
      }, (err: unknown) => alert(`The image could not be deleted: ${errorMessage(err)}`));
    });
    return figure;
  };

  cancel.addEventListener("click", () => {
    if (jobId) images.cancelJob({ jobId }).catch((err: unknown) => (status.textContent = errorMessage(err)));
  });

  const form = h("form", { class: "image-form" },
    prompt,
    more,
    h("div", { class: "row" }, workflowSelect, sizeSelect, countSelect, h("span", { class: "row submit-row" }, price, cancel, generate)));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    void run();
  });

  const run = async () => {
    if (!prompt.value.trim() || jobId) return;
    const [width, height] = sizeSelect.value.split("x").map(Number);
    generate.disabled = true;
    preview.hidden = true;
    try {
      const { job } = await images.submitJob({ workflowId: workflowSelect.value, prompt: prompt.value, width, height,
        count: Number(countSelect.value), idempotencyKey: randomId(), styleId: styleSelect.value,
        negativePrompt: negative.disabled ? "" : negative.value.trim(), steps: steps.value ? Number(steps.value) : 0,
        ...(seed.value ? { seed: BigInt(seed.value) } : {}) });
      if (!job) throw new Error("the server returned no job");
      jobId = job.id;
      cancel.hidden = false;
      deps.onCreditsChanged();
      showProgress(job, 0);
      let last = job;
      for await (const ev of images.watchJob({ jobId: job.id })) {
        if (ev.job) last = ev.job;
        showProgress(last, ev.progressPercent);
        if (ev.preview.length > 0) {
          const old = preview.src;
          preview.src = URL.createObjectURL(new Blob([ev.preview.slice()], { type: ev.previewContentType || "image/png" }));
          preview.hidden = false;
          if (old.startsWith("blob:")) URL.revokeObjectURL(old);
        }
        if (FINAL.has(last.status)) break;
      }
      preview.hidden = true;
      if (last.status === JobStatus.SUCCEEDED) await loadGallery();
    } catch (err) {
      progress.hidden = false;
      status.textContent = errorMessage(err);
      progress.dataset.status = "error";
    } finally {
      jobId = undefined;
      cancel.hidden = true;
      generate.disabled = false;
      deps.onCreditsChanged();
    }
  };

  const el = h("section", { class: "panel images", id: "images" }, form, progress, h("h2", {}, "Gallery"), gallery, viewer);
  return { el, refresh: () => void loadGallery() };
}
