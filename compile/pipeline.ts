/**
 * The pass pipeline from a traced graph to what is lowered: CSE first (so equal constants and
 * repeated index arithmetic merge before patterns are matched), fusion rules, then — for a
 * training graph — reverse-mode autodiff on the fused graph, and CSE + DCE over the result.
 */
import type { Graph } from './ir.ts';
import { differentiate } from './autodiff.ts';
import { cse, dce } from './passes.ts';
import { fuse, type FusionReport } from './fusion.ts';

export interface Compiled extends FusionReport {
  /** Node count of the traced graph, before any pass. */
  readonly traced: number;
}

/** The inference pipeline, with what fusion did. */
export function optimizeReport(g: Graph): Compiled {
  const fused = fuse(cse(g));
  return { graph: dce(cse(fused.graph)), applied: fused.applied, traced: g.nodes.length };
}

export function optimize(g: Graph): Graph {
  return optimizeReport(g).graph;
}

/** The training pipeline: fusion, gradients of `loss` for `wrt` (outputs `grad:NAME`), clean-up. */
export function trainingReport(g: Graph, loss: string, wrt: readonly string[]): Compiled {
  const fused = fuse(cse(g));
  return { graph: dce(cse(differentiate(fused.graph, loss, wrt))), applied: fused.applied, traced: g.nodes.length };
}
