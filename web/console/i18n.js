// i18n.js: the console's words in English and Simplified Chinese. The language
// comes from navigator.language, can be switched in the top bar, and is kept
// in localStorage (the shared translator, /shared/i18n.js, does the rest).

import { translator } from '../shared/i18n.js';

const WORDS = {
  en: {
    email: 'Email', password: 'Password', log_in: 'Log in', log_out: 'Log out', admin: 'Admin', online: 'Online', away: 'Away', offline: 'Offline',
    queued: 'Waiting', mine: 'Mine', open: 'All open', closed: 'Closed', visitors: 'Visitors', agents: 'Agents',
    take: 'Take', transfer: 'Transfer', close: 'Close', reopen: 'Reopen', block: 'Block', internal_note: 'Internal note',
    attach: 'Attach', send: 'Send', visitor: 'Visitor', earlier: 'Earlier conversations', empty: 'Pick a conversation on the left.',
    to: 'To', note: 'Note', cancel: 'Cancel', block_visitor: 'Block this visitor?', block_ip: 'Also block their IP address',
    shortcuts: 'Keyboard shortcuts', close_help: 'Close', typing: 'typing…', read: 'read', sending: 'sending…',
    status_queued: 'waiting', status_assigned: 'assigned', status_closed: 'closed', load_more: 'Load more',
    no_more: 'No more', chat: 'Chat', returning: 'returning', new_visitor: 'new', user_id: 'User ID', verified: 'verified', unverified: 'unverified (not signed)', page: 'Page', referrer: 'Referrer',
    browser: 'Browser', ip: 'IP', name: 'Name', sessions: 'Sessions', blocked: 'Blocked', yes: 'yes', no: 'no',
    new_conversation: 'New conversation', new_message: 'New message', agent_prefix: 'Agent', team_prefix: 'Team',
    bad_login: 'Wrong email or password.', rate_limited: 'Too many attempts; try again later.',
    k_next: 'Next conversation', k_prev: 'Previous conversation', k_send: 'Send', k_esc: 'Close the pane (the conversation stays open)',
    k_canned: 'Canned replies (at the start of the message)', k_help: 'This help', k_lists: 'Waiting / Mine / All open / Closed / Visitors',
    k_note: 'Toggle internal note', held_by: 'with', you: 'you', upload_failed: 'Upload failed',
    notifications: 'Notifications', push_hint: 'Notify me in this browser while the console is closed',
    push_failed: 'Notifications could not be changed', push_denied: 'this browser blocks notifications from kefu',
    leads: 'Leads', lead: 'Lead', lead_new: 'New', lead_open: 'Open', lead_done: 'Done', lead_status: 'Status', assignee: 'Assignee',
    nobody: 'Nobody', assigned_to_me: 'Assigned to me', all_sites: 'All sites', mark_done: 'Mark done', new_lead: 'New lead',
    source_offline_message: 'Offline message', source_missed_conversation: 'Unanswered chat', no_leads: 'No leads here.',
    visitor_data: 'Their data (GDPR / PIPL)', export_data: 'Export', erase_data: 'Erase…', erase: 'Erase',
    erase_title: 'Erase everything about this visitor?', erase_sure: 'I understand this cannot be undone',
    erase_text: "Their messages, attachments, offline messages, leads and search entries are deleted for good. The audit log keeps only the visitor's number and the counts.",
    erased: 'The visitor\'s data was erased.',
  },
  'zh-CN': {
    email: '邮箱', password: '密码', log_in: '登录', log_out: '退出', admin: '管理', online: '在线', away: '离开', offline: '离线',
    queued: '排队中', mine: '我的', open: '全部进行中', closed: '已结束', visitors: '访客', agents: '客服',
    take: '接入', transfer: '转接', close: '结束', reopen: '重新打开', block: '拉黑', internal_note: '内部备注',
    attach: '附件', send: '发送', visitor: '访客', earlier: '历史会话', empty: '从左侧选择一个会话。',
    to: '转给', note: '备注', cancel: '取消', block_visitor: '拉黑这位访客？', block_ip: '同时拉黑其 IP 地址',
    shortcuts: '快捷键', close_help: '关闭', typing: '正在输入…', read: '已读', sending: '发送中…',
    status_queued: '排队中', status_assigned: '已接入', status_closed: '已结束', load_more: '加载更多',
    no_more: '没有更多了', chat: '发起对话', returning: '老访客', new_visitor: '新访客', user_id: '用户 ID', verified: '已验证', unverified: '未验证（无签名）', page: '页面', referrer: '来源',
    browser: '浏览器', ip: 'IP', name: '名字', sessions: '访问次数', blocked: '已拉黑', yes: '是', no: '否',
    new_conversation: '新会话', new_message: '新消息', agent_prefix: '客服', team_prefix: '小组',
    bad_login: '邮箱或密码错误。', rate_limited: '尝试次数过多，请稍后再试。',
    k_next: '下一个会话', k_prev: '上一个会话', k_send: '发送', k_esc: '关闭窗格（会话保持进行）',
    k_canned: '快捷回复（在消息开头输入）', k_help: '显示本帮助', k_lists: '排队 / 我的 / 全部 / 已结束 / 访客',
    k_note: '切换内部备注', held_by: '接待人', you: '你', upload_failed: '上传失败',
    notifications: '通知', push_hint: '控制台关闭时在此浏览器通知我',
    push_failed: '通知设置失败', push_denied: '浏览器已禁止 kefu 的通知',
    leads: '线索', lead: '线索', lead_new: '新线索', lead_open: '跟进中', lead_done: '已完成', lead_status: '状态', assignee: '负责人',
    nobody: '无人', assigned_to_me: '分配给我', all_sites: '全部站点', mark_done: '标记为已完成', new_lead: '新线索',
    source_offline_message: '离线留言', source_missed_conversation: '未回复的会话', no_leads: '这里没有线索。',
    visitor_data: '访客数据（GDPR / 个人信息保护法）', export_data: '导出', erase_data: '删除…', erase: '删除',
    erase_title: '删除这位访客的全部数据？', erase_sure: '我明白此操作无法撤销',
    erase_text: '其消息、附件、离线留言、线索和搜索记录将被永久删除。审计日志只保留访客编号和数量。',
    erased: '访客数据已删除。',
  },
};

export const { t, locale, setLocale, apply } = translator(WORDS, { storageKey: 'kefu.console.language' });
