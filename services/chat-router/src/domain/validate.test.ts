import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { checkClientMessageId, checkId, checkMaxOutputTokens, checkOffset, checkPageSize, checkText, checkTitle, previewOf } from "./validate.js";
import { sendMessageIds } from "./ids.js";
import { decodeConversationCursor, decodeMessageCursor, encodeConversationCursor, encodeMessageCursor } from "./page-token.js";

function fieldError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.InvalidArgument);
    return (err as ConnectError).rawMessage;
  }
  throw new Error("expected INVALID_ARGUMENT");
}

describe("field checks", () => {
  it("name the field and say what is wrong", () => {
    expect(fieldError(() => checkId("conversation_id", ""))).toBe("conversation_id: is required");
    expect(fieldError(() => checkId("conversation_id", "../etc/passwd"))).toBe("conversation_id: must be a UUID");
    expect(fieldError(() => checkText("text", "   \n", 10))).toBe("text: must not be empty");
    expect(fieldError(() => checkText("text", "x".repeat(11), 10))).toMatch(/^text: must be at most 10/);
    expect(fieldError(() => checkText("text", "a\u0000b", 10))).toMatch(/control characters/);
    expect(fieldError(() => checkText("text", "a\ud800b", 10))).toMatch(/control characters/);
    expect(fieldError(() => checkTitle("title", "", true))).toBe("title: must not be empty");
    expect(fieldError(() => checkTitle("title", "a\nb", true))).toMatch(/one line/);
    expect(fieldError(() => checkClientMessageId("client_message_id", ""))).toMatch(/is required/);
    expect(fieldError(() => checkClientMessageId("client_message_id", "has space"))).toMatch(/printable ASCII/);
    expect(fieldError(() => checkMaxOutputTokens("max_output_tokens", -1))).toMatch(/^max_output_tokens:/);
    expect(fieldError(() => checkOffset("offset", -1n))).toMatch(/^offset:/);
    expect(fieldError(() => checkPageSize("page.page_size", -5, 20, 100))).toMatch(/^page.page_size:/);
  });

  it("accept good values", () => {
    expect(checkId("id", "6F9619FF-8B86-D011-B42D-00C04FC964FF")).toBe("6f9619ff-8b86-d011-b42d-00c04fc964ff");
    expect(checkText("text", "héllo 👋\n\tthere", 100)).toBe("héllo 👋\n\tthere");
    expect(checkTitle("title", "  Trip plans  ", false)).toBe("Trip plans");
    expect(checkTitle("title", "", false)).toBe("");
    expect(checkPageSize("p", 0, 20, 100)).toBe(20);
    expect(checkPageSize("p", 1000, 20, 100)).toBe(100);
  });

  it("previews on one line, never splitting a surrogate pair", () => {
    expect(previewOf("a\n\nb   c")).toBe("a b c");
    const p = previewOf(`${"x".repeat(199)}👋 tail`);
    expect(p.length).toBe(199);
  });
});

describe("message ids", () => {
  it("are stable per (conversation, client id) and distinct otherwise", () => {
    const a = sendMessageIds("c1", "m1");
    expect(sendMessageIds("c1", "m1")).toEqual(a);
    expect(a.userMessageId).not.toBe(a.assistantMessageId);
    expect(sendMessageIds("c2", "m1").userMessageId).not.toBe(a.userMessageId);
    expect(a.userMessageId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });
});

describe("page tokens", () => {
  it("round-trip and reject garbage", () => {
    const c = { micros: 1732406400123456n, id: "6f9619ff-8b86-d011-b42d-00c04fc964ff" };
    expect(decodeConversationCursor("f", encodeConversationCursor(c))).toEqual(c);
    expect(decodeMessageCursor("f", encodeMessageCursor(42n))).toBe(42n);
    expect(decodeConversationCursor("f", "")).toBeUndefined();
    expect(fieldError(() => decodeConversationCursor("page.page_token", "garbage"))).toMatch(/^page.page_token:/);
    expect(fieldError(() => decodeMessageCursor("messages_page.page_token", encodeConversationCursor(c)))).toMatch(/^messages_page.page_token:/);
  });
});
