// Tabulator set up the one way every page uses it. Served, `url` answers each page, filter and sort (remote
// mode); in an exported site the rows come with the page (window.NT_ROWS) and Tabulator does the same locally.
function ntColumns(columns, opts) {
  return columns.map(function (c) {
    var col = {field: c.field, title: c.title, visible: c.visible, headerFilter: "input",
               headerFilterPlaceholder: "filter", tooltip: true, maxWidth: 480};
    if (c.choices) {
      col.headerFilter = "list";
      col.headerFilterParams = {values: c.choices, clearable: true};
      col.headerFilterFunc = "=";
    }
    if (c.numeric) { col.sorter = "number"; col.hozAlign = "right"; }
    if (c.field === opts.linkColumn) {  // opens the row's page, named by its linkField
      col.formatter = "link";
      col.formatterParams = {
        url: function (cell) { return opts.link.replace("{}", cell.getRow().getData()[opts.linkField]); },
        label: function (cell) { return cell.getValue(); }};
    }
    return col;
  });
}

function ntTable(el, columns, opts) {
  var config = {
    columns: ntColumns(columns, opts), layout: "fitDataTable", pagination: true,
    paginationSize: 50, paginationSizeSelector: [25, 50, 100, 200], paginationCounter: "rows", placeholder: "no rows",
  };
  if (opts.url) {
    Object.assign(config, {ajaxURL: opts.url, paginationMode: "remote", sortMode: "remote",
                           filterMode: "remote", headerFilterLiveFilterDelay: 250});
  } else {
    config.data = window.NT_ROWS || [];
  }
  var table = new Tabulator(el, config);
  table.on("dataProcessed", function () { document.body.dataset.rowsLoaded = "1"; });
  return table;
}

// The leaderboard's summary: every column sortable (numbers by their leading value), the recipe opens its row.
function ntLeaderboard(el, headers, rows) {
  var columns = headers.map(function (h, i) {
    var col = {field: String(i), title: h, headerSort: true, sorter: i === 0 || h === "Student" ? "string" : leading};
    if (i === 0) {
      col.formatter = "link";
      col.formatterParams = {url: function (cell) { return "r" + cell.getRow().getData().run + "/index.html"; },
                             label: function (cell) { return cell.getValue(); }};
      col.frozen = true;
    }
    return col;
  });
  var data = rows.map(function (r) {
    var d = {run: r.run};
    headers.forEach(function (h, i) { d[String(i)] = r[h]; });
    return d;
  });
  return new Tabulator(el, {columns: columns, data: data, layout: "fitDataTable"});
}

function leading(a, b) {  // "0.3102 ± 0.0311", "+0.074 (p=0.011)", "1,657": by the first number in the cell
  function num(v) {
    var m = String(v).replace(/,/g, "").match(/[-+]?\d*\.?\d+(e[-+]?\d+)?/i);
    return m ? parseFloat(m[0]) : -Infinity;
  }
  return num(a) - num(b);
}
