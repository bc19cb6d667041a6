/**
 * The run list: rows updated in place (focus and scroll stay), a listbox with arrow keys,
 * a state icon per phase, icon buttons per run, and each run's log opened inline under it.
 */
import { Clipboard, Notification } from '@jupyterlab/apputils';
import {
  LabIcon,
  ToolbarButton,
  checkIcon,
  circleEmptyIcon,
  clearIcon,
  closeIcon,
  copyIcon,
  filterListIcon,
  listIcon,
  refreshIcon,
  runIcon,
  runningIcon,
  stopIcon
} from '@jupyterlab/ui-components';
import { Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';

import { IRunRow, errorText, request } from './api';
import { el, elided, emptyState, iconButton, setElided } from './dom';

const STATE_ICONS: Record<string, LabIcon> = {
  submitted: circleEmptyIcon,
  downloading: runningIcon,
  running: runningIcon,
  succeeded: checkIcon,
  failed: closeIcon,
  cancelled: stopIcon
};

const CLEARED_KEY = 'flyte-jupyter:runs-cleared-before';

interface IRow {
  run: IRunRow;
  item: HTMLLIElement;
  icon: HTMLElement;
  name: HTMLElement;
  time: HTMLElement;
  meta: HTMLElement;
  error: HTMLElement;
  action: HTMLElement;
  log: HTMLPreElement | null;
}

function clock(iso: string | null): string {
  if (!iso) {
    return '';
  }
  const when = new Date(iso);
  const today = new Date().toDateString() === when.toDateString();
  const time = when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return today ? time : `${when.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${time}`;
}

function basename(path: string | null): string {
  return path ? path.split('/').pop() || path : 'no notebook';
}

export class RunsView extends Widget {
  readonly poll: Poll;
  /** Section toolbar items: filter toggle, refresh, clear finished. */
  readonly toolbarItems: [string, Widget][];
  private list: HTMLUListElement;
  private message: HTMLElement;
  private rows = new Map<string, IRow>();
  private selected: string | null = null;
  private openLog: string | null = null;
  private allNotebooks = false;
  private clearedBefore = window.localStorage.getItem(CLEARED_KEY) ?? '';
  private filterButton: ToolbarButton;
  private latest: IRunRow[] = [];

  /** `notebook` names the active notebook (relative to the server root), or null. */
  constructor(private notebook: () => string | null) {
    super();
    this.addClass('fj-runs-view');
    this.message = el('div', { class: 'fj-runs-message', role: 'status' });
    this.list = el('ul', {
      class: 'fj-runs',
      role: 'listbox',
      'aria-label': 'Runs'
    });
    this.node.append(this.message, this.list);
    this.list.addEventListener('keydown', event => this.onKey(event));
    this.list.addEventListener('focusin', event => {
      const item = (event.target as HTMLElement).closest<HTMLLIElement>('li.fj-run');
      if (item) {
        this.select(item.dataset.run ?? null, false);
      }
    });
    this.filterButton = new ToolbarButton({
      icon: filterListIcon,
      tooltip: 'Show the runs of every notebook',
      pressedTooltip: 'Show only the runs of this notebook',
      pressed: false,
      onClick: () => this.toggleAll()
    });
    this.toolbarItems = [
      ['all-notebooks', this.filterButton],
      [
        'refresh',
        new ToolbarButton({
          icon: refreshIcon,
          tooltip: 'Refresh the run list',
          onClick: () => void this.poll.refresh()
        })
      ],
      [
        'clear-finished',
        new ToolbarButton({
          icon: clearIcon,
          tooltip: 'Clear finished runs from this list (the history keeps them)',
          onClick: () => this.clearFinished()
        })
      ]
    ];
    this.poll = new Poll({
      auto: false,
      factory: () => this.refresh(),
      frequency: { interval: 2000, backoff: true, max: 30_000 },
      name: 'flyte-jupyter:runs',
      standby: () => !this.isVisible || 'when-hidden'
    });
  }

  dispose(): void {
    this.poll.dispose();
    super.dispose();
  }

  /** Focus the selected row (or the first one): where the keyboard lands in the panel. */
  focusList(): boolean {
    const item = this.itemOf(this.selected) ?? this.list.querySelector<HTMLLIElement>('li');
    item?.focus();
    return !!item;
  }

  /** The active notebook changed: its runs come first. */
  notebookChanged(): void {
    this.render(this.latest);
  }

  protected onAfterAttach(): void {
    void this.poll.start();
  }

  protected onAfterShow(): void {
    void this.poll.refresh();
  }

  private async refresh(): Promise<void> {
    try {
      const doc = await request<{ runs: IRunRow[] }>('runs', {}, { limit: '50' });
      this.latest = doc.runs;
    } catch (error) {
      this.message.replaceChildren(
        el('p', { class: 'fj-error' }, `Could not list runs: ${errorText(error)}`)
      );
      throw error; // the poll backs off
    }
    this.render(this.latest);
    const open = this.openLog ? this.rows.get(this.openLog) : undefined;
    if (open?.log && open.log.dataset.final !== 'true') {
      await this.loadLog(open);
    }
  }

  private toggleAll(): void {
    this.allNotebooks = !this.allNotebooks;
    this.filterButton.pressed = this.allNotebooks;
    this.render(this.latest);
  }

  private clearFinished(): void {
    this.clearedBefore = new Date().toISOString();
    window.localStorage.setItem(CLEARED_KEY, this.clearedBefore);
    this.render(this.latest);
  }

  /** Which runs show, in which order: this notebook's first (only them unless "all"). */
  private visible(runs: IRunRow[]): IRunRow[] {
    const current = this.notebook();
    const shown = runs.filter(
      run => !(run.final && run.created < this.clearedBefore)
    );
    if (!current) {
      return shown;
    }
    const mine = shown.filter(run => run.notebook === current);
    return this.allNotebooks ? [...mine, ...shown.filter(run => run.notebook !== current)] : mine;
  }

  private render(runs: IRunRow[]): void {
    const shown = this.visible(runs);
    this.message.replaceChildren(...this.emptyMessage(runs, shown));
    const keep = new Set(shown.map(run => run.id));
    for (const [id, row] of this.rows) {
      if (!keep.has(id)) {
        row.item.remove();
        this.rows.delete(id);
      }
    }
    shown.forEach((run, index) => {
      let row = this.rows.get(run.id);
      if (!row) {
        row = this.createRow(run);
        this.rows.set(run.id, row);
      }
      this.updateRow(row, run);
      // move a row only when its place changed: moving the focused row would blur it
      if (this.list.children[index] !== row.item) {
        this.list.insertBefore(row.item, this.list.children[index] ?? null);
      }
    });
    if (!this.selected || !this.rows.has(this.selected)) {
      this.selected = shown[0]?.id ?? null;
    }
    this.markSelection();
  }

  /** Roving tabindex: only the selected row (and its buttons) is in the tab order. */
  private markSelection(): void {
    for (const [id, row] of this.rows) {
      const on = id === this.selected;
      row.item.setAttribute('aria-selected', String(on));
      row.item.tabIndex = on ? 0 : -1;
      for (const button of Array.from(row.item.querySelectorAll('button'))) {
        button.tabIndex = on ? 0 : -1;
      }
    }
  }

  private emptyMessage(runs: IRunRow[], shown: IRunRow[]): HTMLElement[] {
    if (shown.length) {
      return [];
    }
    if (!runs.length) {
      return [emptyState('No runs yet. Run a cell that starts with %%flyte_run to see it here.')];
    }
    if (this.notebook() && !this.allNotebooks) {
      return [
        emptyState(
          'No runs from this notebook yet: run a %%flyte_run cell, or show every ' +
            "notebook's runs with the filter button above."
        )
      ];
    }
    return [emptyState('Every run here has finished and was cleared; new runs show here.')];
  }

  private createRow(run: IRunRow): IRow {
    const item = el('li', { class: 'fj-run', role: 'option', 'data-run': run.id });
    const icon = el('span', { class: 'fj-state' });
    const name = elided('', 'fj-run-name');
    const time = el('span', { class: 'fj-run-time' });
    const action = el('span', { class: 'fj-run-action' });
    const log = iconButton(listIcon, 'Show the log', () => this.toggleLog(run.id), 'fj-log-button');
    const copy = iconButton(copyIcon, 'Copy the run id', () => this.copyId(run.id));
    const line = el('div', { class: 'fj-run-line' });
    line.append(icon, name, time, action, log, copy);
    const meta = elided('', 'fj-run-meta', 'div');
    const error = elided('', 'fj-run-error fj-error', 'div');
    item.append(line, meta, error);
    item.addEventListener('click', event => {
      if (!(event.target as HTMLElement).closest('pre')) {
        this.select(run.id, true);
        this.toggleLog(run.id);
      }
    });
    return { run, item, icon, name, time, meta, error, action, log: null };
  }

  private updateRow(row: IRow, run: IRunRow): void {
    const previous = row.run.status;
    row.run = run;
    const first = !row.icon.firstChild;
    if (first || previous !== run.status) {
      row.item.className = `fj-run fj-phase-${run.status}`;
      const icon = STATE_ICONS[run.status] ?? circleEmptyIcon;
      row.icon.replaceChildren(icon.element({ tag: 'span', className: 'fj-icon' }));
      row.icon.title = run.status;
      const final = run.final;
      const button = final
        ? iconButton(runIcon, `Re-run ${run.name}`, event => void this.rerun(run, event))
        : iconButton(stopIcon, `Cancel ${run.name}`, event => void this.cancel(run, event));
      button.tabIndex = run.id === this.selected ? 0 : -1;
      const hadFocus = row.action.contains(document.activeElement);
      row.action.replaceChildren(button);
      if (hadFocus) {
        button.focus();
      }
    }
    setElided(row.name, run.name);
    const duration = run.duration === '-' ? '' : run.duration;
    if (row.time.textContent !== duration) {
      row.time.textContent = duration;
    }
    // the notebook only when it is not the one the panel describes (its path heads the panel)
    const where = run.notebook === this.notebook() ? '' : ` · ${basename(run.notebook)}`;
    const meta = `${run.status} · ${clock(run.created)}${where}`;
    const details = [
      `run ${run.id}`,
      `notebook ${run.notebook ?? '-'}`,
      `started ${run.started ?? run.created}`,
      `version ${run.version}`,
      `image ${run.image ?? 'default'} · ${run.executor}`,
      `bundle ${run.digest ?? 'none'}`
    ].join('\n');
    setElided(row.meta, meta, details);
    setElided(row.error, run.error ?? '');
    row.item.setAttribute('aria-label', `${run.name}, ${run.status}, ${basename(run.notebook)}`);
  }

  private itemOf(id: string | null): HTMLLIElement | null {
    return id ? (this.rows.get(id)?.item ?? null) : null;
  }

  private select(id: string | null, focus: boolean): void {
    if (id === this.selected && !focus) {
      return;
    }
    this.selected = id;
    this.markSelection();
    if (focus) {
      this.itemOf(id)?.focus();
    }
  }

  private onKey(event: KeyboardEvent): void {
    const items = Array.from(this.list.querySelectorAll<HTMLLIElement>('li.fj-run'));
    const index = items.findIndex(item => item.dataset.run === this.selected);
    const onRow = (event.target as HTMLElement).matches('li.fj-run');
    let next = -1;
    switch (event.key) {
      case 'ArrowDown':
        next = Math.min(index + 1, items.length - 1);
        break;
      case 'ArrowUp':
        next = Math.max(index - 1, 0);
        break;
      case 'Home':
        next = 0;
        break;
      case 'End':
        next = items.length - 1;
        break;
      case 'Enter':
      case ' ':
        if (onRow && this.selected) {
          event.preventDefault();
          this.toggleLog(this.selected);
        }
        return;
      default:
        return;
    }
    event.preventDefault();
    if (items[next]) {
      this.select(items[next].dataset.run ?? null, true);
    }
  }

  private toggleLog(id: string): void {
    const row = this.rows.get(id);
    if (!row) {
      return;
    }
    if (row.log) {
      row.log.remove();
      row.log = null;
      this.openLog = null;
      row.item.removeAttribute('aria-expanded');
      return;
    }
    const open = this.openLog ? this.rows.get(this.openLog) : undefined;
    if (open?.log) {
      open.log.remove();
      open.log = null;
      open.item.removeAttribute('aria-expanded');
    }
    row.log = el('pre', { class: 'fj-logs', 'aria-label': `log of ${row.run.name}`, tabindex: '-1' });
    row.log.textContent = 'loading the log…';
    row.item.append(row.log);
    row.item.setAttribute('aria-expanded', 'true');
    this.openLog = id;
    void this.loadLog(row);
  }

  /** The run's output so far; while it goes, the view follows the tail. */
  private async loadLog(row: IRow): Promise<void> {
    const log = row.log;
    if (!log) {
      return;
    }
    let text: string;
    let final: boolean;
    let changed: HTMLElement | null = null;
    try {
      const doc = await request<{ status: string; logs: string; final: boolean }>(
        `runs/${row.run.id}/logs`
      );
      final = doc.final;
      text = doc.logs || (final ? '(no output)' : '(no output yet)');
      if (final) {
        const detail = await request<{
          outcome: Record<string, string>;
          changed: string | null;
          changed_since: string | null;
        }>(`runs/${row.run.id}`);
        const outcome = detail.outcome ?? {};
        if (outcome.traceback) {
          // A remote failure's log usually ends with the traceback already: show it once.
          if (!(doc.logs ?? '').includes(outcome.traceback.trim())) {
            text += `\n${outcome.traceback}`;
          }
        } else if (outcome.repr !== undefined) {
          text += `\nresult (${outcome.type}): ${outcome.repr}`;
        } else if (outcome.note) {
          text += `\n${outcome.note}`;
        }
        if (detail.changed) {
          // as the cell's own status line says it: why this run's version differs
          const since = detail.changed_since;
          changed = el(
            'span',
            {
              class: 'fj-run-changed',
              title: `flyte-jupyter runs diff ${since} ${row.run.id} shows more`
            },
            `changed since the last run of this cell (${since}): ${detail.changed}`
          );
        }
      }
    } catch (error) {
      log.classList.add('fj-error');
      log.textContent = `Could not read the log: ${errorText(error)}`;
      return;
    }
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
    const first = log.dataset.loaded !== 'true';
    if (log.textContent !== text + (changed?.textContent ?? '')) {
      log.replaceChildren(text, ...(changed ? [changed] : []));
    }
    log.dataset.loaded = 'true';
    log.dataset.final = String(final);
    if (first || atEnd) {
      log.scrollTop = log.scrollHeight;
    }
  }

  private async rerun(run: IRunRow, event: MouseEvent): Promise<void> {
    const button = event.currentTarget as HTMLButtonElement;
    button.disabled = true;
    button.classList.add('fj-busy');
    try {
      const started = await request<{ id: string }>(`runs/${run.id}/rerun`, { method: 'POST' });
      Notification.success(`Re-running ${run.name} as run ${started.id}`, { autoClose: 5000 });
      this.selected = started.id;
      await this.poll.refresh();
    } catch (error) {
      Notification.error(`Could not re-run ${run.name}: ${errorText(error)}`, { autoClose: 8000 });
    } finally {
      button.disabled = false;
      button.classList.remove('fj-busy');
    }
  }

  private async cancel(run: IRunRow, event: MouseEvent): Promise<void> {
    const button = event.currentTarget as HTMLButtonElement;
    button.disabled = true;
    try {
      await request(`runs/${run.id}/cancel`, { method: 'POST' });
      Notification.info(`Cancelled ${run.name} (run ${run.id})`, { autoClose: 4000 });
      await this.poll.refresh();
    } catch (error) {
      button.disabled = false;
      Notification.error(`Could not cancel ${run.name}: ${errorText(error)}`, { autoClose: 8000 });
    }
  }

  private copyId(id: string): void {
    Clipboard.copyToSystem(id);
    Notification.info(`Copied run id ${id}`, { autoClose: 2000 });
  }
}
