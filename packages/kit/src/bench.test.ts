import { describe, expect, it } from "vitest";
import { markdownTable, mean, median, percentile } from "./bench.js";

describe("bench helpers", () => {
  it("takes percentiles by nearest rank without reordering the input", () => {
    const v = [5, 1, 4, 2, 3, 10, 9, 8, 7, 6];
    expect(percentile(v, 50)).toBe(6);
    expect(percentile(v, 99)).toBe(10);
    expect(percentile(v, 0)).toBe(1);
    expect(v[0]).toBe(5);
    expect(percentile([], 50)).toBeNaN();
  });

  it("computes the mean and the median of odd and even counts", () => {
    expect(mean([1, 2, 6])).toBe(3);
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(mean([])).toBeNaN();
    expect(median([])).toBeNaN();
  });

  it("pads a Markdown table to its widest cells", () => {
    expect(markdownTable(["a", "long head"], [["wide cell", "x"], ["y"]])).toBe(
      "| a         | long head |\n|-----------|-----------|\n| wide cell | x         |\n| y         |           |");
  });
});
