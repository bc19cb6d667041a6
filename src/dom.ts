/**
 * Small DOM helpers shared by the sidebar's sections.
 */
import { LabIcon } from '@jupyterlab/ui-components';

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  text = ''
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    node.setAttribute(key, value);
  }
  if (text) {
    node.textContent = text;
  }
  return node;
}

/** One line that ends in "…" when too narrow, the whole text in its tooltip. */
export function elided(text: string, cls = '', tag: 'span' | 'div' = 'span'): HTMLElement {
  return el(tag, { class: `fj-elide ${cls}`.trim(), title: text }, text);
}

/** Set an elided line's text and tooltip, touching the DOM only when they change. */
export function setElided(node: HTMLElement, text: string, title = text): void {
  if (node.textContent !== text) {
    node.textContent = text;
  }
  if (node.title !== title) {
    node.title = title;
  }
}

/** A small icon button in JupyterLab's toolbar style, its label as tooltip and name. */
export function iconButton(
  icon: LabIcon,
  label: string,
  onClick: (event: MouseEvent) => void,
  cls = ''
): HTMLButtonElement {
  const button = el('button', {
    type: 'button',
    class: `jp-Button jp-mod-minimal jp-ToolbarButtonComponent fj-icon-button ${cls}`.trim(),
    title: label,
    'aria-label': label
  });
  button.append(icon.element({ tag: 'span', className: 'fj-icon' }));
  button.addEventListener('click', event => {
    event.stopPropagation();
    onClick(event);
  });
  return button;
}

/** A paragraph saying what to do next, for an empty section. */
export function emptyState(text: string): HTMLElement {
  return el('p', { class: 'fj-empty' }, text);
}
