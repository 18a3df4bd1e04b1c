// Cursor pagination (luna.common.v1.PageRequest) for list commands.

/** Largest page asked for at once; every List RPC accepts at least this many. */
const MAX_PAGE_SIZE = 100;

/** Fetches pages until `limit` items are collected or there are no more. */
export async function collectPages<T>(
  limit: number,
  fetch: (page: { pageSize: number; pageToken: string }) => Promise<{ items: T[]; next: string | undefined }>,
): Promise<T[]> {
  const items: T[] = [];
  let pageToken = "";
  for (;;) {
    const res = await fetch({ pageSize: Math.min(MAX_PAGE_SIZE, limit - items.length), pageToken });
    items.push(...res.items);
    if (!res.next || items.length >= limit || res.items.length === 0) return items.slice(0, limit);
    pageToken = res.next;
  }
}
