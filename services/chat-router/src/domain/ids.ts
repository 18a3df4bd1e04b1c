// Message ids. A SendMessage retry must map to the same messages — and so to the same credit hold, whose idempotency
// key is the assistant message id — so both ids are derived from (conversation, client message id) as name-based
// UUIDs (RFC 9562 version 5). Regenerated replies get random ids.
import { createHash } from "node:crypto";

/** Namespace of chat-router's name-based ids (a fixed random UUID). */
const NAMESPACE = Buffer.from("3f6c1e9a5b7d4c2e8a1f0b9d7e6c5a43", "hex");

function uuidV5(name: string): string {
  const h = createHash("sha1").update(NAMESPACE).update(name, "utf8").digest();
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString("hex");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

/** The user and assistant message ids of a SendMessage. */
export function sendMessageIds(conversationId: string, clientMessageId: string): { userMessageId: string; assistantMessageId: string } {
  return {
    userMessageId: uuidV5(`${conversationId}/${clientMessageId}/user`),
    assistantMessageId: uuidV5(`${conversationId}/${clientMessageId}/assistant`),
  };
}
