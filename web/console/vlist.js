// vlist.js: a virtual list. Only the items inside the viewport (plus a margin)
// are in the DOM, absolutely positioned over a spacer as tall as the whole
// list, so 10,000 messages or 500 conversations cost what a screenful costs.
// Item heights may vary: each is measured once rendered and the estimate is
// used until then. The scroll position stays anchored when items are added
// above (older history) and follows the bottom when the user is there.

const OVERSCAN_PX = 400;

export class VirtualList {
  /**
   * @param {HTMLElement} container the scrolling element
   * @param {{estimate: number, render: (item) => HTMLElement, key: (item) => string, fixed?: boolean}} options
   */
  constructor(container, { estimate, render, key, fixed = false }) {
    this.container = container;
    this.estimate = estimate;
    this.renderItem = render;
    this.keyOf = key;
    this.fixed = fixed;
    this.items = [];
    this.heights = new Map();
    this.nodes = new Map();
    this.offsets = [0];
    this.spacer = document.createElement('div');
    this.spacer.className = 'vspacer';
    container.replaceChildren(this.spacer);
    this.frame = 0;
    container.addEventListener('scroll', () => this.schedule());
    new ResizeObserver(() => this.schedule()).observe(container);
  }

  heightOf(item) {
    return this.fixed ? this.estimate : this.heights.get(this.keyOf(item)) ?? this.estimate;
  }

  layout() {
    const offsets = new Array(this.items.length + 1);
    offsets[0] = 0;
    for (let i = 0; i < this.items.length; i++) offsets[i + 1] = offsets[i] + this.heightOf(this.items[i]);
    this.offsets = offsets;
    this.spacer.style.height = `${offsets[offsets.length - 1]}px`;
  }

  atBottom() {
    const c = this.container;
    return c.scrollHeight - c.scrollTop - c.clientHeight < 40;
  }

  /** Replaces the items. `anchor`: 'bottom' sticks to the end, 'keep' keeps the first visible item in place. */
  setItems(items, { anchor = 'auto' } = {}) {
    const c = this.container;
    const stick = anchor === 'bottom' || (anchor === 'auto' && this.atBottom());
    let anchorKey = null;
    let anchorDelta = 0;
    if (anchor === 'keep' && this.items.length) {
      const i = this.indexAt(c.scrollTop);
      if (this.items[i]) {
        anchorKey = this.keyOf(this.items[i]);
        anchorDelta = c.scrollTop - this.offsets[i];
      }
    }
    this.items = items;
    this.layout();
    if (stick) c.scrollTop = c.scrollHeight;
    else if (anchorKey !== null) {
      const i = items.findIndex((item) => this.keyOf(item) === anchorKey);
      if (i >= 0) c.scrollTop = this.offsets[i] + anchorDelta;
    }
    this.render(stick);
  }

  /** Re-renders one item (its data changed). */
  refresh(key) {
    const node = this.nodes.get(key);
    if (node) {
      node.remove();
      this.nodes.delete(key);
    }
    this.schedule();
  }

  /** Scrolls so the item with `key` is a third of the way down the viewport; false if absent. */
  scrollToKey(key) {
    const i = this.items.findIndex((item) => this.keyOf(item) === key);
    if (i < 0) return false;
    this.container.scrollTop = Math.max(0, this.offsets[i] - this.container.clientHeight / 3);
    this.render(false);
    // Heights measured by that render may move the item: place it again.
    this.container.scrollTop = Math.max(0, this.offsets[i] - this.container.clientHeight / 3);
    this.render(false);
    return true;
  }

  scrollToBottom() {
    this.container.scrollTop = this.container.scrollHeight;
    this.render(true);
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render(false);
    });
  }

  indexAt(y) {
    let lo = 0;
    let hi = this.items.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.offsets[mid + 1] <= y) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The items currently in the viewport. */
  visibleItems() {
    const c = this.container;
    const first = this.indexAt(c.scrollTop);
    const last = this.indexAt(c.scrollTop + c.clientHeight);
    return this.items.slice(first, last + 1);
  }

  render(stick) {
    const c = this.container;
    const top = Math.max(0, c.scrollTop - OVERSCAN_PX);
    const bottom = c.scrollTop + c.clientHeight + OVERSCAN_PX;
    const first = this.indexAt(top);
    const wanted = new Set();
    for (let i = first; i < this.items.length && this.offsets[i] < bottom; i++) {
      const item = this.items[i];
      const key = this.keyOf(item);
      wanted.add(key);
      let node = this.nodes.get(key);
      if (!node) {
        node = this.renderItem(item);
        this.nodes.set(key, node);
        this.spacer.appendChild(node);
      }
      node.style.top = `${this.offsets[i]}px`;
    }
    for (const [key, node] of this.nodes) {
      if (!wanted.has(key)) {
        node.remove();
        this.nodes.delete(key);
      }
    }
    if (this.fixed) return;
    // Measure what was drawn; if any height changed, lay out again (once).
    let changed = false;
    for (const key of wanted) {
      const h = this.nodes.get(key).offsetHeight;
      if (h && this.heights.get(key) !== h) {
        this.heights.set(key, h);
        changed = true;
      }
    }
    if (changed) {
      const i = this.indexAt(c.scrollTop);
      const anchorKey = this.items[i] && this.keyOf(this.items[i]);
      const delta = c.scrollTop - (this.offsets[i] ?? 0);
      this.layout();
      if (stick) c.scrollTop = c.scrollHeight;
      else if (anchorKey) c.scrollTop = this.offsets[i] + delta;
      for (let j = first; j < this.items.length; j++) {
        const node = this.nodes.get(this.keyOf(this.items[j]));
        if (node) node.style.top = `${this.offsets[j]}px`;
      }
    }
  }
}
