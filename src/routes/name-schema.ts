import * as z from 'zod';
import { checkName } from '../domain/greeting.js';

/**
 * A name by the one rule of src/domain/greeting.ts, which the RPC handlers check too: for a
 * route's body or path. Give it a description with `.meta()` where it is used.
 */
export const NameSchema = z.string().superRefine((raw, ctx) => {
  // JSON can carry lone surrogates (`"\ud800"`), which protobuf would turn into U+FFFD.
  if (!raw.isWellFormed()) {
    ctx.addIssue({ code: 'custom', message: 'name must be well-formed Unicode' });
    return;
  }
  const check = checkName(raw);
  if (!check.ok) ctx.addIssue({ code: 'custom', message: check.problem });
});
