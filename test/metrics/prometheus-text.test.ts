// The strict exposition parser the metrics tests rely on: it accepts prom-client's output and refuses what Prometheus would misread.
import { expect } from 'chai';
import { Counter, Histogram, Registry } from 'prom-client';
import { ExpositionError, parseExposition, samplesOf } from './prometheus-text.ts';

describe('Prometheus text parser', () => {
  it("parses prom-client's own output, escapes included", async () => {
    const registry = new Registry();
    new Counter({ name: 'a_total', help: 'line\\one\ntwo', labelNames: ['l'], registers: [registry] }).inc({ l: 'q"uo\\te\nnl' }, 2);
    new Histogram({ name: 'h_seconds', help: 'h', buckets: [0.1, 1], registers: [registry] }).observe(0.5);
    const families = parseExposition(await registry.metrics());
    expect(families.get('a_total')!.help).to.equal('line\\one\ntwo');
    expect(samplesOf(families, 'a_total')).to.deep.equal([{ name: 'a_total', labels: { l: 'q"uo\\te\nnl' }, value: 2 }]);
    expect(samplesOf(families, 'h_seconds_bucket').map((s) => [s.labels['le'], s.value])).to.deep.equal([['0.1', 0], ['1', 1], ['+Inf', 1]]);
    expect(samplesOf(families, 'h_seconds_count')[0]!.value).to.equal(1);
  });

  const bad: Array<[string, string, RegExp]> = [
    ['a sample before its TYPE', 'x_total 1\n', /no # TYPE/],
    ['a series twice', '# TYPE x counter\nx{a="1"} 1\nx{a="1"} 2\n', /appears twice/],
    ['an unknown escape', '# TYPE x counter\nx{a="\\t"} 1\n', /bad escape/],
    ['an unterminated label value', '# TYPE x counter\nx{a="1} 1\n', /unterminated|bad value/],
    ['a value that is no number', '# TYPE x gauge\nx 1,5\n', /bad value/],
    ['no final newline', '# TYPE x gauge\nx 1', /end with a newline/],
    ['a label given twice', '# TYPE x gauge\nx{a="1",a="2"} 1\n', /given twice/],
    ['buckets that are not cumulative', '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n', /not cumulative/],
    ['+Inf bucket differing from _count', '# TYPE h histogram\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 2\n', /!= _count/],
    ['a second TYPE', '# TYPE x gauge\n# TYPE x gauge\n', /second # TYPE/],
  ];
  for (const [name, text, message] of bad) {
    it(`refuses ${name}`, () => {
      expect(() => parseExposition(text)).to.throw(ExpositionError, message);
    });
  }
});
