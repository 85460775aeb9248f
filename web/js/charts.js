// The curves (uPlot) and the CKA heatmap (a canvas).

// uPlot (web/package.json) is loaded by index.html as a classic script: its minified build.
const uPlot = window.uPlot;

/** A uPlot chart in a container: drawn anew for each run (create), resized with the window,
 * removed on Reset (clear). Its width follows the container's (at least minWidth; width
 * while the container has none, as in a hidden tab). */
export class Chart {
  constructor(container, { height = 260, minWidth = 300, width = 440 } = {}) {
    Object.assign(this, { container, height, minWidth, width, plot: null });
    window.addEventListener('resize', () => {
      if (this.plot) this.plot.setSize({ width: Math.max(this.minWidth, this.container.clientWidth), height: this.height });
    });
  }

  create(options, data) {
    this.container.textContent = '';
    const width = Math.max(this.minWidth, this.container.clientWidth || this.width);
    this.plot = new uPlot({ width, height: this.height, ...options }, data, this.container);
  }

  setData(data) {
    this.plot.setData(data);
  }

  clear() {
    this.plot = null;
    this.container.textContent = '';
  }
}

/** uPlot options of a chart against the step: the y axis's label and scale, the series. */
export function stepChart(yLabel, series, y = {}) {
  return {
    scales: { x: { time: false }, y },
    axes: [{ label: 'step' }, { label: yLabel }],
    series: [{ label: 'step' }, ...series],
  };
}

/** A curve without point markers; extra overrides or adds uPlot series options. */
export const line = (label, stroke, extra = {}) => ({ label, stroke, width: 1.5, points: { show: false }, ...extra });

// From dark blue (0) through teal to yellow (1), like viridis.
const STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

function viridis(v) {
  const x = Math.min(1, Math.max(0, Number.isFinite(v) ? v : 0)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(x));
  const t = x - i;
  const [r, g, b] = STOPS[i].map((a, k) => Math.round(a + t * (STOPS[i + 1][k] - a)));
  return `rgb(${r},${g},${b})`;
}

/** A CKA matrix ({ rows, cols, values } row-major) as a heatmap with its numbers. */
export function drawHeatmap(canvas, c) {
  const nr = c.rows.length;
  const nc = c.cols.length;
  const cell = Math.max(34, Math.min(64, Math.floor(360 / Math.max(nr, nc))));
  const left = 70;
  const top = 22;
  const dpr = window.devicePixelRatio || 1;
  const w = left + nc * cell + 4;
  const h = top + nr * cell + 40;
  canvas.width = w * dpr;
  canvas.height = h * dpr;
  canvas.style.width = `${w}px`;
  canvas.style.height = `${h}px`;
  const g = canvas.getContext('2d');
  g.scale(dpr, dpr);
  g.fillStyle = '#fff';
  g.fillRect(0, 0, w, h);
  g.font = '11px system-ui, sans-serif';
  for (let i = 0; i < nr; i++) {
    for (let j = 0; j < nc; j++) {
      const v = c.values[i * nc + j];
      g.fillStyle = viridis(v);
      g.fillRect(left + j * cell, top + i * cell, cell - 1, cell - 1);
      g.fillStyle = v > 0.6 ? '#111' : '#fff';
      g.textAlign = 'center';
      g.textBaseline = 'middle';
      g.fillText(Number.isFinite(v) ? v.toFixed(2) : '–', left + j * cell + cell / 2, top + i * cell + cell / 2);
    }
  }
  g.fillStyle = '#4b5563';
  g.textAlign = 'right';
  g.textBaseline = 'middle';
  c.rows.forEach((name, i) => g.fillText(`T ${name}`, left - 6, top + i * cell + cell / 2));
  g.textAlign = 'center';
  g.textBaseline = 'top';
  c.cols.forEach((name, j) => g.fillText(name.replace('stage ', 'S '), left + j * cell + cell / 2, top + nr * cell + 4));
  g.fillText('student stages', left + (nc * cell) / 2, top + nr * cell + 20);
  g.textAlign = 'left';
  g.textBaseline = 'bottom';
  g.fillText('teacher stages \u2193', 2, top - 4);
}
