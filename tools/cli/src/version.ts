/** The CLI's version, sent as `user-agent: luna-cli/<version>` and printed by `luna --version`. */
export const VERSION = "0.1.0";
