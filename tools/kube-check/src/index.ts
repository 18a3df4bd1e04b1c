// @luna/kube-check: offline cluster checks shared by charts/test, k8s/test and gateway/test.
export {
  HELM_VERSION, HELM_NPM_PACKAGE, HELM_NPM_INTEGRITY, HELM_SHA256, KUBE_VERSION, TEMPLATE_FLAGS, repoRoot,
  ensureHelm, helm, helmResult, HelmError, helmFromTarball, dependencyBuild, templateArgs, parseManifest, renderChart,
} from "./helm.js";
export type { HelmResult, RenderOptions } from "./helm.js";
export { validateObjects, assertValidObjects, formatIssues, checkKedaTriggers } from "./validate.js";
export type { K8sObject, ValidationIssue } from "./validate.js";
export { tgzEntry, zipEntry } from "./archive.js";
export { ensurePromtool, promtool } from "./promtool.js";
export type { PromtoolOptions, PromtoolResult } from "./promtool.js";
