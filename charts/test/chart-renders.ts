// What every chart test file needs around the real helm: one `helm template` per chart and ci file per run, a broken
// copy of a good render (to show a check failing), and the `# expect-error:` line of a ci/invalid* file.
import { readFileSync } from "node:fs";
import { renderChart, type K8sObject } from "@luna/kube-check";

/** A cached renderer of `charts/<chart>` with its ci files (`render()` = the chart's defaults). */
export function chartRenderer(chart: string, opts: { release?: string; namespace?: string } = {}) {
  const cache = new Map<string, Promise<K8sObject[]>>();
  return (values?: string, extraArgs: string[] = []): Promise<K8sObject[]> => {
    const key = `${values ?? ""}:${extraArgs.join(" ")}`;
    let r = cache.get(key);
    if (!r) {
      r = renderChart(`charts/${chart}`, { ...opts, valuesFiles: values ? [`charts/${chart}/ci/${values}`] : [], extraArgs })
        .then((x) => x.objects);
      cache.set(key, r);
    }
    return r;
  };
}

/** A deep copy of a render with `fn` applied: the broken input a check must catch. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function edit(objects: K8sObject[], fn: (copy: any[]) => void): K8sObject[] {
  const copy = structuredClone(objects);
  fn(copy);
  return copy;
}

/** The message a refused values file names on its `# expect-error: <message>` line. */
export function expectedError(file: string): string | undefined {
  return /^# expect-error: (.+)$/m.exec(readFileSync(file, "utf8"))?.[1];
}
