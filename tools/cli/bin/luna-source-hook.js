// Module resolution hook: resolve workspace packages to their TypeScript sources (the "luna-source" condition),
// the same as `node --conditions=luna-source`.
export async function resolve(specifier, context, nextResolve) {
  const conditions = context.conditions.includes("luna-source") ? context.conditions : [...context.conditions, "luna-source"];
  return nextResolve(specifier, { ...context, conditions });
}
