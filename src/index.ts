/**
 * flyte-jupyter for JupyterLab: a sidebar for code-packaging settings, bundle previews,
 * runs and export, plus a command-palette entry to open it.
 */
import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { LabIcon } from '@jupyterlab/ui-components';

import { FlyteSidebar } from './sidebar';

const ICON = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M3 6.5 12 2l9 4.5v11L12 22l-9-4.5zm2 1.2v8.6l7 3.5 7-3.5V7.7l-7 3.5z"/>
  </g>
</svg>`;

const flyteIcon = new LabIcon({ name: 'flyte-jupyter:icon', svgstr: ICON });

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'flyte-jupyter:sidebar',
  description: 'Code packaging settings, bundle preview, runs and export for %%flyte_run.',
  autoStart: true,
  requires: [ILabShell, INotebookTracker],
  optional: [ICommandPalette, ISettingRegistry],
  activate: (
    app: JupyterFrontEnd,
    shell: ILabShell,
    tracker: INotebookTracker,
    palette: ICommandPalette | null,
    registry: ISettingRegistry | null
  ) => {
    const sidebar = new FlyteSidebar(tracker);
    if (registry) {
      registry
        .load(plugin.id)
        .then(settings => sidebar.useDefaults(settings))
        .catch(reason => console.warn('flyte-jupyter: settings not loaded', reason));
    }
    sidebar.title.icon = flyteIcon;
    shell.add(sidebar, 'left', { rank: 850 });
    const command = 'flyte-jupyter:open-sidebar';
    app.commands.addCommand(command, {
      label: 'flyte-jupyter: Open Sidebar',
      execute: () => {
        shell.activateById(sidebar.id);
        // after the palette closed and handed focus back to where it was
        window.setTimeout(() => sidebar.focusPanel(), 100);
      }
    });
    palette?.addItem({ command, category: 'flyte-jupyter' });
  }
};

export default plugin;
