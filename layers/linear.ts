import type { Dim, Shape } from '../dsl/shape.ts';
import { layer, type Layer } from '../dsl/layer.ts';
import { param, type Init } from '../dsl/param.ts';
import { linear as linearOp } from '../dsl/ops.ts';
import type { Tensor } from '../dsl/tensor.ts';

export const xavier = (fanIn: number, fanOut: number): Init => ({ kind: 'xavierUniform', fanIn, fanOut });
export const zeros: Init = { kind: 'zeros' };
export const normal = (std: number): Init => ({ kind: 'normal', std });

/** nn.Linear(inF, outF): `weight` (out, in), `bias` (out). Default init: Xavier-uniform, zero bias (DiT's recipe). */
export function linear<const S extends Shape, I extends Dim, O extends Dim>(
  lead: S,
  inF: I,
  outF: O,
  weightInit: Init = xavier(inF, outF),
): Layer<readonly [...S, I], readonly [...S, O]> {
  return layer([...lead, inF] as const, [...lead, outF] as const, {
    weight: param([outF, inF], weightInit),
    bias: param([outF], zeros),
  }, (p, x) => linearOp(x, p.get('weight', [outF, inF] as const), p.get('bias', [outF] as const)) as Tensor<readonly [...S, O]>);
}
